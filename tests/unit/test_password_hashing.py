"""Password checks in one thread (dashboard/auth.py `verify_password`): the same answers
as argon2-cffi's own verification, on one core, and a fallback for hashes it cannot
check itself."""

from __future__ import annotations

import threading
import time

import pytest
from argon2 import PasswordHasher, Type

from dashboard.auth import _verify_in_this_thread, hash_password, verify_password


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("three blue herons at dusk")


def test_same_answers_as_argon2_cffi(stored: str) -> None:
    assert _verify_in_this_thread(stored, "three blue herons at dusk") is True
    assert _verify_in_this_thread(stored, "three blue herons at dawn") is False
    assert verify_password(stored, "three blue herons at dusk") and not verify_password(stored, "x" * 12)
    assert not verify_password(None, "three blue herons at dusk")
    assert PasswordHasher().verify(stored, "three blue herons at dusk")


def test_other_parameters_and_unicode_passwords() -> None:
    hasher = PasswordHasher(time_cost=2, memory_cost=8192, parallelism=2, hash_len=24, salt_len=12)
    stored = hasher.hash("Blåbærsyltetøy på skiva")
    assert _verify_in_this_thread(stored, "Blåbærsyltetøy på skiva") is True
    assert _verify_in_this_thread(stored, "Blabaersyltetoy pa skiva") is False


def test_hashes_it_cannot_check_itself_fall_back() -> None:
    argon2i = PasswordHasher(type=Type.I, memory_cost=8192).hash("a password for argon2i")
    assert _verify_in_this_thread(argon2i, "a password for argon2i") is None
    assert verify_password(argon2i, "a password for argon2i")
    assert _verify_in_this_thread("not a hash", "x") is None and not verify_password("not a hash", "x" * 12)


def test_a_check_uses_one_core(stored: str) -> None:
    before = threading.active_count()
    in_process, in_thread = time.process_time(), time.thread_time()
    verify_password(stored, "wrong password!")
    in_process, in_thread = time.process_time() - in_process, time.thread_time() - in_thread
    assert in_thread > 0.05 and in_thread >= 0.9 * in_process, "the work is done in this thread, not in lanes"
    assert threading.active_count() == before
