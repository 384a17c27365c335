"""API keys: scoped, stored hashed, refused when malformed or revoked, managed by the CLI."""

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyoso.api import command as api_command
from kyoso.api.keys import (
    CACHE_TTL_S,
    KEY_LENGTH,
    KEY_PREFIX,
    ApiKeyError,
    ApiKeyStore,
    KeyNameError,
    KeyStoreError,
    Lookup,
    MissingKeyStoreError,
    Principal,
    Scope,
    ScopeError,
    ScopeKind,
    UnknownKeyError,
    check_key_name,
    parse_scope,
)
from kyoso.api.settings import ApiSettings
from kyoso.cli import main

PLATFORM = Scope(ScopeKind.PLATFORM)
OKADA = Scope(ScopeKind.FACTORY, "okada-machining")
KEYS_ENV = "KYOSO_API_KEYS"
DEFAULT_KEYS_PATH = ApiSettings.model_fields["keys"].default


@pytest.fixture(autouse=True)
def _no_api_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads KYOSO_API_* like ``kyoso api``; the tests set what they need."""
    for name in list(os.environ):
        if name.startswith("KYOSO_API_"):
            monkeypatch.delenv(name)


class ManualClock:
    """A monotonic clock that moves only when told, to step through the cache's lifetime."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "keys.sqlite3", create=True)


# --- scopes and names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("platform", PLATFORM),
        ("admin", Scope(ScopeKind.ADMIN)),
        ("factory:okada-machining", OKADA),
        ("factory:" + "a" * 63, Scope(ScopeKind.FACTORY, "a" * 63)),
    ],
)
def test_scopes_parse_and_print_back(text: str, scope: Scope) -> None:
    assert parse_scope(text) == scope
    assert str(scope) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "scope '': use platform, factory:<id> or admin"),
        ("Platform", "scope 'Platform': use platform"),
        (" platform", "scope ' platform': use platform"),
        ("platform ", "scope 'platform ': use platform"),
        ("tenant:okada", "scope 'tenant:okada': use platform"),
        ("factory", "scope 'factory': the factory scope needs a factory id: factory:<id>"),
        ("factory:", "scope 'factory:': factory id '' is not a valid id"),
        ("factory:Okada", "scope 'factory:Okada': factory id 'Okada' is not a valid id"),
        ("factory:a:b", "factory id 'a:b' is not a valid id"),
        ("factory:" + "a" * 64, "is not a valid id: use 1-63 characters"),
        ("platform:okada", "scope 'platform:okada': the platform scope takes no factory id"),
        ("admin:", "scope 'admin:': the admin scope takes no factory id"),
    ],
)
def test_bad_scopes_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ScopeError) as caught:
        parse_scope(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ApiKeyError)


def test_a_scope_is_checked_however_it_is_made() -> None:
    with pytest.raises(ScopeError, match="needs a factory id"):
        Scope(ScopeKind.FACTORY)
    with pytest.raises(ScopeError, match="takes no factory id"):
        Scope(ScopeKind.ADMIN, "okada-machining")
    with pytest.raises(ScopeError, match="not a valid id"):
        Scope(ScopeKind.FACTORY, "../other")


@pytest.mark.parametrize("name", ["", " portal", "portal ", "a\nb", "bell\a", "x" * 101])
def test_key_names_that_would_garble_a_listing_are_refused(store: ApiKeyStore, name: str) -> None:
    with pytest.raises(KeyNameError, match="use 1-100 printable characters"):
        store.create(name, PLATFORM)
    assert store.list_keys() == []


def test_key_names_may_be_any_printable_text() -> None:
    assert check_key_name("Ōkada portal (Team B)") == "Ōkada portal (Team B)"


# --- the store ----------------------------------------------------------------------------


def test_a_created_key_authenticates_until_it_is_revoked(store: ApiKeyStore) -> None:
    portal = store.create("regional portal", PLATFORM)
    okada = store.create("okada dashboard", OKADA)
    assert portal.key.startswith(KEY_PREFIX)
    assert len(portal.key) == KEY_LENGTH
    assert portal.key not in repr(portal)

    principal = store.authenticate(okada.key)
    assert principal == Principal(okada.info.key_id, "okada dashboard", OKADA)
    assert principal.factory == "okada-machining"
    assert store.authenticate(portal.key) == Principal(
        portal.info.key_id, "regional portal", PLATFORM
    )
    assert portal.info.key_id in portal.key
    assert [k.key_id for k in store.list_keys()] == [portal.info.key_id, okada.info.key_id]

    revoked = store.revoke(portal.info.key_id)
    assert revoked.revoked_at is not None
    assert store.authenticate(portal.key) is None  # in the revoking process: at once
    assert store.authenticate(okada.key) is not None
    assert store.revoke(portal.info.key_id).revoked_at == revoked.revoked_at
    listed = {k.key_id: k for k in store.list_keys()}
    assert listed[portal.info.key_id].revoked_at == revoked.revoked_at
    assert listed[okada.info.key_id].revoked_at is None


def test_revoking_an_unknown_key_says_so(store: ApiKeyStore) -> None:
    with pytest.raises(UnknownKeyError, match="no API key '0123456789ab'"):
        store.revoke("0123456789ab")


@pytest.mark.parametrize("revoker", ["store", "process"])
def test_a_revocation_reaches_another_process_within_the_cache_ttl(
    tmp_path: Path, revoker: str
) -> None:
    path = tmp_path / "keys.sqlite3"
    clock = ManualClock()
    with ApiKeyStore(path, create=True) as cli, ApiKeyStore(path, clock=clock) as api:
        new = cli.create("okada dashboard", OKADA)
        assert api.authenticate(new.key) is not None  # a new key works at once
        if revoker == "store":
            cli.revoke(new.info.key_id)
        else:
            revoke = "from kyoso.api.keys import ApiKeyStore as S; import sys, pathlib; "
            revoke += "S(pathlib.Path(sys.argv[1])).revoke(sys.argv[2])"
            subprocess.run(
                [sys.executable, "-c", revoke, str(path), new.info.key_id],
                check=True,
                timeout=60,
            )
        clock.now += CACHE_TTL_S - 0.01
        assert api.authenticate(new.key) is not None  # still trusted from memory
        clock.now += 0.01
        assert api.authenticate(new.key) is None
    assert CACHE_TTL_S <= 5.0  # the bound the module documents


def test_a_key_looked_up_lately_is_answered_from_memory_alone(tmp_path: Path) -> None:
    """What the event loop asks (authenticate_cached) is what authenticate answers, when
    memory can tell: a key looked up within the cache's time, or a string no key is like;
    the file is for the rest, and for a key another thread is looking up meanwhile."""
    clock = ManualClock()
    with ApiKeyStore(tmp_path / "keys.sqlite3", create=True, clock=clock) as store:
        new = store.create("okada dashboard", OKADA)
        assert store.authenticate_cached("not a key") is None
        assert store.authenticate_cached(new.key) is Lookup.FILE  # never looked up
        principal = store.authenticate(new.key)
        assert store.authenticate_cached(new.key) == principal
        other = new.key[:-1] + ("X" if new.key[-1] != "X" else "Y")  # its id, not its hash
        assert store.authenticate_cached(other) is None
        with store._lock:  # another thread reads the file: the loop does not wait for it
            assert store.authenticate_cached(new.key) is Lookup.FILE
        clock.now += CACHE_TTL_S
        assert store.authenticate_cached(new.key) is Lookup.FILE  # too old: read again
        store.revoke(new.info.key_id)
        assert store.authenticate_cached(new.key) is Lookup.FILE  # revoked here: forgotten
        assert store.authenticate(new.key) is None
        assert store.authenticate_cached(new.key) is None  # read again: known revoked


def test_only_a_hash_of_the_key_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    with ApiKeyStore(path, create=True) as store:
        created = [store.create(f"key {n}", PLATFORM) for n in range(20)]
        for new in created:
            assert store.authenticate(new.key) is not None
        written = b"".join(f.read_bytes() for f in tmp_path.iterdir())  # with -wal, -shm
    written += path.read_bytes()
    for new in created:
        secret = new.key.rsplit("_", 1)[1]
        assert new.key.encode() not in written
        assert secret.encode() not in written
        assert hashlib.sha256(new.key.encode()).digest() in written
        assert new.info.key_id.encode() in written


def test_threads_share_one_store(store: ApiKeyStore) -> None:
    keys = [store.create(f"key {n}", OKADA).key for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(store.authenticate, keys * 50))
    assert all(p is not None and p.factory == "okada-machining" for p in found)


# --- keys that must never authenticate ----------------------------------------------------


def test_near_misses_of_a_real_key_are_refused(store: ApiKeyStore) -> None:
    key = store.create("portal", PLATFORM).key
    key_id, secret = key[len(KEY_PREFIX) :].split("_")
    near_misses = [
        key[:-1],
        key + "a",
        f" {key}",
        f"Bearer {key}",
        key.upper(),
        "kyO_" + key[4:],
        f"kyo_{key_id}-{secret}",
        f"kyo_{key_id}_{secret[:-1]}\u0660",  # an Arabic-Indic digit: \d would take it
        f"kyo_{key_id}_{secret[:-1]}é",
        f"kyo_{key_id}_{'A' * len(secret)}",
        KEY_PREFIX + "a" * 10_000_000,
        "\x00" * KEY_LENGTH,
    ]
    for text in near_misses:
        assert store.authenticate(text) is None, text[:80]
    assert store.authenticate(key) is not None


def test_malformed_keys_are_refused_without_reading_the_database(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.sqlite3", create=True)
    key = store.create("portal", PLATFORM).key
    store.close()  # from here on, any database read raises
    for text in ["", "kyo_", key[:-1], key + "x", "é" * KEY_LENGTH, "x" * 1_000_000]:
        assert store.authenticate(text) is None
    with pytest.raises(sqlite3.ProgrammingError):
        store.authenticate(f"kyo_{'0' * 12}_{'A' * 43}")  # well-formed: looked up


def test_random_strings_never_authenticate_nor_raise(store: ApiKeyStore) -> None:
    key = store.create("portal", PLATFORM).key
    key_id = key[len(KEY_PREFIX) : -44]
    strings = st.one_of(
        st.text(),
        st.text(min_size=KEY_LENGTH, max_size=KEY_LENGTH),
        st.text(max_size=8).map(lambda s: s * 100_000),
        st.text().map(lambda s: KEY_PREFIX + s),
        st.from_regex(r"kyo_[0-9a-f]{12}_[0-9A-Za-z]{43}", fullmatch=True),
        st.from_regex(rf"kyo_{key_id}_[0-9A-Za-z]{{43}}", fullmatch=True),
    )

    @settings(max_examples=500, deadline=None)
    @given(text=strings)
    def check(text: str) -> None:
        assert store.authenticate(text) is None

    check()


def test_a_key_changed_in_one_character_is_refused(store: ApiKeyStore) -> None:
    key = store.create("portal", PLATFORM).key

    @settings(max_examples=300, deadline=None)
    @given(position=st.integers(0, KEY_LENGTH - 1), char=st.characters())
    def check(position: int, char: str) -> None:
        changed = key[:position] + char + key[position + 1 :]
        assert (store.authenticate(changed) is not None) is (changed == key)

    check()


# --- opening the file ---------------------------------------------------------------------


def test_a_missing_store_is_an_error_unless_it_is_to_be_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keys.sqlite3"
    with pytest.raises(MissingKeyStoreError, match="no API key store at"):
        ApiKeyStore(path)
    assert not path.parent.exists()
    ApiKeyStore(path, create=True).close()
    with ApiKeyStore(path) as store:
        assert store.list_keys() == []
    with sqlite3.connect(path) as db:  # readers never wait for the CLI writing
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_that_is_not_a_key_store_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database, not even close: " * 100)
    with pytest.raises(KeyStoreError, match="is not an SQLite database"):
        ApiKeyStore(text, create=True)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    for create in (False, True):
        with pytest.raises(KeyStoreError, match="not an API key store of schema version 1"):
            ApiKeyStore(other, create=create)


# --- the command --------------------------------------------------------------------------


def _keys(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``kyoso api keys ARGV``, parsed as the ``kyoso`` command parses it."""
    parser = argparse.ArgumentParser(prog="kyoso")
    api_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["api", "keys", *argv])
    code: int = args.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_creates_lists_and_revokes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "var" / "keys.sqlite3"
    where = ["--keys", str(path)]
    code, out, err = _keys(capsys, "create", "--name", "okada dashboard", "--scope",
                           "factory:okada-machining", *where)  # fmt: skip
    assert code == 0, err
    key = out.strip()
    assert out == key + "\n"  # the key alone on stdout, for $(...)
    assert "it cannot be shown again" in err
    with ApiKeyStore(path) as store:
        principal = store.authenticate(key)
    assert principal is not None
    assert principal.key_id in err
    assert "factory:okada-machining" in err

    code, out, err = _keys(capsys, "list", *where)
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ID", "CREATED", "REVOKED", "SCOPE", "NAME"]
    assert row.split()[0] == principal.key_id
    assert row.split()[2:] == ["-", "factory:okada-machining", "okada", "dashboard"]
    assert key[len(KEY_PREFIX) + 13 :] not in out
    assert hashlib.sha256(key.encode()).hexdigest() not in out

    code, out, err = _keys(capsys, "revoke", principal.key_id, *where)
    assert code == 0, err
    assert f"revoked API key {principal.key_id} (factory:okada-machining)" in out
    code, out, _ = _keys(capsys, "list", *where)
    assert out.splitlines()[1].split()[2].endswith("Z")
    with ApiKeyStore(path) as store:
        assert store.authenticate(key) is None


def test_the_cli_takes_the_key_file_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _keys(capsys, "create", "--name", "portal", "--scope", "platform")[0] == 0
    assert (tmp_path / DEFAULT_KEYS_PATH).exists()
    monkeypatch.setenv(KEYS_ENV, str(tmp_path / "elsewhere.sqlite3"))
    code, _, err = _keys(capsys, "list")
    assert code == 1
    assert f"no API key store at {tmp_path / 'elsewhere.sqlite3'}" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["create", "--name", "p", "--scope", "factory:Okada"], 2, "factory id 'Okada'"),
        (["create", "--name", "p", "--scope", "root"], 2, "scope 'root': use platform"),
        (["create", "--name", "", "--scope", "admin"], 2, "key name '': use 1-100"),
        (["list"], 1, "no API key store at"),
        (["revoke", "0123456789ab"], 1, "no API key store at"),
    ],
)
def test_cli_errors_go_to_stderr_with_their_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    path = tmp_path / "keys.sqlite3"
    got, out, err = _keys(capsys, *argv, "--keys", str(path))
    assert (got, out) == (code, "")
    assert message in err
    assert not path.exists()  # bad input creates no store


def test_cli_revoke_tells_a_bad_id_from_an_unknown_one(
    store: ApiKeyStore, capsys: pytest.CaptureFixture[str]
) -> None:
    key = store.create("portal", PLATFORM).key
    where = ["--keys", str(store.path)]
    assert _keys(capsys, "revoke", "0123456789ab", *where) == (
        1, "", "no API key '0123456789ab'\n"
    )  # fmt: skip
    code, out, err = _keys(capsys, "revoke", key, *where)
    assert (code, out) == (2, "")
    assert "not a key id" in err
    assert key not in err  # a key pasted by mistake is not echoed
    assert store.authenticate(key) is not None


def test_cli_refuses_a_file_that_is_not_a_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, not even close: " * 100)
    code, out, err = _keys(capsys, "create", "--name", "p", "--scope", "admin", "--keys", str(path))
    assert (code, out) == (2, "")
    assert "is not an SQLite database" in err


def _api_yaml(tmp_path: Path, keys: Path) -> Path:
    config = tmp_path / "etc" / "api.yaml"
    config.parent.mkdir()
    config.write_text(f"keys: {keys}\nport: 8123\n")
    return config


def test_keys_commands_use_the_key_store_of_the_api_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kyoso api --config api.yaml keys ...`` works on the store that ``kyoso api --config
    api.yaml`` serves, not on a default file in the working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = tmp_path / "state" / "keys.sqlite3"
    config = _api_yaml(tmp_path, path)
    argv = ["api", "--config", str(config), "keys"]
    assert main([*argv, "create", "--name", "portal", "--scope", "platform"]) == 0
    key = capsys.readouterr().out.strip()
    with ApiKeyStore(path) as store:
        principal = store.authenticate(key)
    assert principal is not None
    assert list(cwd.iterdir()) == []  # no var/ here
    assert main([*argv, "list"]) == 0
    assert principal.key_id in capsys.readouterr().out
    assert main(["api", "--config", str(config), "--check"]) == 0
    assert f"keys {path}," in capsys.readouterr().out
    assert main([*argv, "revoke", principal.key_id]) == 0
    assert f"revoked API key {principal.key_id}" in capsys.readouterr().out


def test_the_key_store_comes_from_the_option_the_environment_the_file_or_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _api_yaml(tmp_path, tmp_path / "file.sqlite3")
    create = ["keys", "create", "--name", "p", "--scope", "admin"]
    assert main(["api", *create]) == 0
    assert (tmp_path / DEFAULT_KEYS_PATH).exists()
    assert main(["api", "--config", str(config), *create]) == 0
    assert (tmp_path / "file.sqlite3").exists()
    monkeypatch.setenv(KEYS_ENV, str(tmp_path / "env.sqlite3"))
    assert main(["api", "--config", str(config), *create]) == 0
    assert (tmp_path / "env.sqlite3").exists()
    assert main(["api", "--config", str(config), *create, "--keys", "option.sqlite3"]) == 0
    assert (tmp_path / "option.sqlite3").exists()
    capsys.readouterr()


def test_keys_commands_refuse_settings_that_kyoso_api_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "api.yaml"
    config.write_text("keys: k.sqlite3\nkeyz: typo.sqlite3\n")
    code = main(["api", "--config", str(config), "keys", "create", "--name", "p", "--scope",
                 "admin"])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == f"{config}:2: keyz: Extra inputs are not permitted\n"
    assert list(tmp_path.iterdir()) == [config]
