"""PII screening and text normalisation (Django-free; used by prompt import and document cleaning)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Card numbers: 13-19 digits, optionally grouped by spaces or dashes; confirmed by the Luhn check.
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# Phone numbers: an optional +country code, then 7-15 digits with common separators.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])"
)
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
US_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "ssn": "[SSN]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _is_ipv4(match: str) -> bool:
    try:
        ipaddress.IPv4Address(match)
    except ValueError:
        return False
    return True


def _is_ipv6(match: str) -> bool:
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 7 <= len(digits) <= 15


# Order matters: the most specific patterns claim their spans first.
_DETECTORS: list[tuple[str, re.Pattern[str], object]] = [
    ("email", EMAIL, None),
    ("iban", IBAN, None),
    ("card", CARD, _is_card),
    ("ssn", US_SSN, None),
    ("ip", IPV4, _is_ipv4),
    ("ip", IPV6, _is_ipv6),
    ("phone", PHONE, _is_phone),
]


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: str
    start: int
    end: int


def find_pii(text: str) -> list[PiiMatch]:
    """Every PII span in ``text``, non-overlapping, in order."""
    taken: list[PiiMatch] = []
    for kind, pattern, check in _DETECTORS:
        for m in pattern.finditer(text):
            if check is not None and not check(m.group()):  # type: ignore[operator]
                continue
            if any(m.start() < t.end and t.start < m.end() for t in taken):
                continue
            taken.append(PiiMatch(kind, m.start(), m.end()))
    return sorted(taken, key=lambda t: t.start)


def redact(text: str, matches: Iterable[PiiMatch] | None = None) -> str:
    matches = find_pii(text) if matches is None else list(matches)
    out, last = [], 0
    for m in matches:
        out.append(text[last : m.start])
        out.append(PLACEHOLDERS[m.kind])
        last = m.end
    out.append(text[last:])
    return "".join(out)


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: two prompts that differ only so are duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def messages_hash(messages: list[dict[str, str]]) -> str:
    canonical = [[m["role"], normalise_text(m["content"])] for m in messages]
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def storable_text(text: str) -> str:
    """Model output and imported text as every database can store it: NUL (which PostgreSQL text refuses)
    becomes U+FFFD, the replacement character, so the row is kept and the oddity stays visible."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
