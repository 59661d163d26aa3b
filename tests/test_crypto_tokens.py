"""Bearer tokens pass as a command-line option's value, whatever the random source drew."""

from __future__ import annotations

import argparse

from eap.node.crypto import tokens


def test_a_token_never_starts_with_a_dash(monkeypatch):
    drawn = iter(["-leadingDash" + "x" * 31, "ok" + "y" * 41])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(drawn))
    assert tokens.bearer_token() == "ok" + "y" * 41


def test_every_token_parses_as_an_argparse_option_value():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--token")
    for _ in range(2000):  # about 31 of 2,000 raw draws start with "-"
        token = tokens.bearer_token()
        assert len(token) == 43
        assert parser.parse_args(["--token", token]).token == token


def test_a_new_node_home_gets_a_token_without_a_leading_dash(tmp_path, monkeypatch):
    from eap.node.config import create_home

    drawn = iter(["-" + "a" * 42, "b" * 43])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(drawn))
    cfg = create_home(tmp_path / "home", "n.example", "CO-ANT", None, operator_signed=True)
    assert cfg.api_token() == "b" * 43
