"""Shared record types: the floor below both the domain and the store.

Plain dataclasses (:mod:`.models`) and closed enumerations (:mod:`.enums`) that the domain
layer returns and the store reads and writes.  Nothing here imports the domain, the store or
any transport, so every layer above can use them without a door running backwards.
"""
