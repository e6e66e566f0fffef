"""Sign-in throttling (OWASP): growing delays per (account, address) and per
address, and a trusted device that keeps signing in while others are throttled.
Domain level, with a clock the test moves instead of sleeping."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from flint.accounts import service, signin_throttle
from flint.accounts.models import MerchantRecord, SignInAttemptRecord, SignInDeviceRecord
from flint.accounts.service import SignIn
from flint.common.db import Database
from flint.common.errors import FlintError

PASSWORD = "correct horse battery"
WRONG = "not the password"


class MovableClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def clocked(database_url: str, db: Database, clock: MovableClock) -> Iterator[Database]:
    database = Database(database_url, clock=clock)
    yield database
    database.dispose()


def address() -> str:
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def new_merchant(database: Database) -> str:
    email = f"shop-{secrets.token_hex(6)}@example.com"
    with database.unit_of_work() as uow:
        service.create_merchant(uow, name="Shop", email=email, password=PASSWORD)
        uow.commit()
    return email


def attempt(
    database: Database, email: str, password: str, client_ip: str, device_token: str = ""
) -> SignIn | FlintError:
    """One sign-in: the SignIn, or the error it was refused with."""
    try:
        with database.unit_of_work() as uow:
            signed_in = service.sign_in(
                uow, email=email, password=password, client_ip=client_ip, device_token=device_token
            )
            uow.commit()
            return signed_in
    except FlintError as error:
        return error


def fail(database: Database, email: str, client_ip: str, times: int = 1) -> None:
    for _ in range(times):
        outcome = attempt(database, email, WRONG, client_ip)
        assert isinstance(outcome, FlintError)
        assert outcome.reason == "INVALID_CREDENTIALS"


def wait_of(outcome: SignIn | FlintError) -> int:
    """The Retry-After of a throttled attempt."""
    assert isinstance(outcome, FlintError), "the attempt was not refused"
    assert outcome.reason == "RATE_LIMITED"
    return int(outcome.metadata["retry_after_seconds"])


def signed_in(outcome: SignIn | FlintError) -> SignIn:
    assert isinstance(outcome, SignIn), outcome
    return outcome


def test_five_failures_are_free_then_the_wait_doubles(clocked: Database, clock: MovableClock):
    email, attacker = new_merchant(clocked), address()
    fail(clocked, email, attacker, times=5)
    waits = []
    for _ in range(4):
        wait = wait_of(attempt(clocked, email, PASSWORD, attacker))
        waits.append(wait)
        clock.advance(wait)
        fail(clocked, email, attacker)
    assert waits == [2, 4, 8, 16]
    # A refused attempt is not recorded: refusing again does not extend the wait.
    assert wait_of(attempt(clocked, email, PASSWORD, attacker)) == 32
    assert wait_of(attempt(clocked, email, WRONG, attacker)) == 32


def test_the_wait_stops_growing_at_fifteen_minutes(clocked: Database, clock: MovableClock):
    email, attacker = new_merchant(clocked), address()
    fail(clocked, email, attacker, times=5)
    for _ in range(10):
        clock.advance(wait_of(attempt(clocked, email, PASSWORD, attacker)))
        fail(clocked, email, attacker)
    assert wait_of(attempt(clocked, email, PASSWORD, attacker)) == 15 * 60


def test_failures_from_one_address_do_not_lock_the_account_for_another(
    clocked: Database, clock: MovableClock
):
    email, attacker = new_merchant(clocked), address()
    fail(clocked, email, attacker, times=5)
    for _ in range(5):
        clock.advance(wait_of(attempt(clocked, email, PASSWORD, attacker)))
        fail(clocked, email, attacker)
    assert wait_of(attempt(clocked, email, PASSWORD, attacker)) == 64
    # The merchant elsewhere, on a browser that never signed in before: no wait.
    signed_in(attempt(clocked, email, PASSWORD, address()))


def test_a_trusted_device_signs_in_while_its_address_is_throttled(
    clocked: Database, clock: MovableClock
):
    email, office = new_merchant(clocked), address()
    device_token = signed_in(attempt(clocked, email, PASSWORD, office)).device_token
    assert device_token.startswith("fdv_")
    clock.advance(1)
    # An attacker behind the same address (office NAT) guesses at the account.
    fail(clocked, email, office, times=5)
    for _ in range(3):
        clock.advance(wait_of(attempt(clocked, email, PASSWORD, office)))
        fail(clocked, email, office)
    assert wait_of(attempt(clocked, email, PASSWORD, office)) > 0
    # The merchant's own browser still signs in, and keeps its device token.
    again = signed_in(attempt(clocked, email, PASSWORD, office, device_token))
    assert again.device_token == ""
    signed_in(attempt(clocked, email, PASSWORD, address(), device_token))


def test_a_device_token_of_another_account_earns_no_trust(clocked: Database, clock: MovableClock):
    email, other, attacker = new_merchant(clocked), new_merchant(clocked), address()
    foreign_token = signed_in(attempt(clocked, other, PASSWORD, attacker)).device_token
    fail(clocked, email, attacker, times=5)
    assert wait_of(attempt(clocked, email, PASSWORD, attacker, foreign_token)) == 2
    assert wait_of(attempt(clocked, email, PASSWORD, attacker, "fdv_made_up")) == 2


def test_a_device_whose_account_is_guessed_at_is_throttled_on_its_own(
    clocked: Database, clock: MovableClock
):
    email, home = new_merchant(clocked), address()
    device_token = signed_in(attempt(clocked, email, PASSWORD, home)).device_token
    for _ in range(5):
        outcome = attempt(clocked, email, WRONG, home, device_token)
        assert isinstance(outcome, FlintError)
        assert outcome.reason == "INVALID_CREDENTIALS"
    # A stolen device cookie gets five guesses, then the same growing delays.
    assert wait_of(attempt(clocked, email, PASSWORD, home, device_token)) == 2
    clock.advance(2)
    signed_in(attempt(clocked, email, PASSWORD, home, device_token))


def test_an_expired_device_earns_no_trust(clocked: Database, clock: MovableClock):
    email, home = new_merchant(clocked), address()
    device_token = signed_in(attempt(clocked, email, PASSWORD, home)).device_token
    clock.advance(service.DEVICE_TTL.total_seconds() + 1)
    fail(clocked, email, home, times=5)
    assert wait_of(attempt(clocked, email, PASSWORD, home, device_token)) == 2
    clock.advance(2)
    # Signing in again makes the browser a new device.
    assert signed_in(attempt(clocked, email, PASSWORD, home, device_token)).device_token


def test_one_address_failing_against_many_accounts_is_throttled(
    clocked: Database, clock: MovableClock
):
    sprayer = address()
    emails = [new_merchant(clocked) for _ in range(21)]
    # One wrong password per account: no account's own counter is near its limit.
    for email in emails[:20]:
        fail(clocked, email, sprayer)
    assert wait_of(attempt(clocked, emails[20], PASSWORD, sprayer)) == 2
    clock.advance(2)
    fail(clocked, emails[20], sprayer)
    assert wait_of(attempt(clocked, emails[20], PASSWORD, sprayer)) == 4
    # The sprayed accounts still sign in from anywhere else.
    signed_in(attempt(clocked, emails[0], PASSWORD, address()))


def test_a_success_resets_the_account_address_counter(clocked: Database, clock: MovableClock):
    email, home = new_merchant(clocked), address()
    fail(clocked, email, home, times=4)
    signed_in(attempt(clocked, email, PASSWORD, home))
    clock.advance(1)
    # Without the reset, the fifth and sixth failures would make this one wait.
    fail(clocked, email, home, times=4)
    signed_in(attempt(clocked, email, PASSWORD, home))


def stored(database: Database, email: str) -> tuple[int, int]:
    """How many sign-in attempts of `email`, and devices of its merchant, are stored."""
    with database.read() as session:
        attempts = session.scalar(select(func.count()).where(SignInAttemptRecord.email == email))
        devices = session.scalar(
            select(func.count())
            .select_from(SignInDeviceRecord)
            .join(MerchantRecord, MerchantRecord.id == SignInDeviceRecord.merchant_id)
            .where(MerchantRecord.email == email)
        )
    return int(attempts or 0), int(devices or 0)


def test_upkeep_forgets_attempts_past_every_window_and_expired_devices(
    clocked: Database, clock: MovableClock
) -> None:
    email, place = new_merchant(clocked), address()
    fail(clocked, email, place, times=3)
    assert isinstance(attempt(clocked, email, PASSWORD, place), SignIn)
    assert stored(clocked, email) == (4, 1)

    clock.advance(signin_throttle.ATTEMPT_RETENTION.total_seconds() + 60)
    fail(clocked, email, place)
    forgotten = signin_throttle.purge_history(clocked)
    assert forgotten.done >= 4
    assert forgotten.failed == 0
    # The fresh failure still counts; the device is still trusted.
    assert stored(clocked, email) == (1, 1)

    clock.advance(timedelta(days=91).total_seconds())
    signin_throttle.purge_history(clocked)
    assert stored(clocked, email) == (0, 0)
