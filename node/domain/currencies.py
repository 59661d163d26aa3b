"""ISO 4217 alphabetic currency codes a price may be in (DESIGN §3: exact integer money).

The active codes of ISO 4217 (list one, "current currency and funds"), including the fund and
precious-metal codes the standard lists (e.g. ``XAU``, ``CLF``) but not ``XXX`` (no currency)
or ``XTS`` (reserved for testing).  Amounts are always integer minor units; the node never
converts between currencies, so only the code matters, not its number of decimals.
"""

from __future__ import annotations

_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB
    PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
    SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS
    VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER
    ZAR ZMW ZWG ZWL
"""

ISO_4217: frozenset[str] = frozenset(_CODES.split())


def is_currency(code: str) -> bool:
    """``code`` is an active ISO 4217 alphabetic code (exactly, upper case)."""
    return code in ISO_4217
