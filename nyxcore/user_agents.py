"""A browser and its system, in words, from a User-Agent header ("Firefox on Linux"). No Flask here.

Good enough to recognise one's own sessions on the account page, not a device database: the
header is whatever the browser (or anyone) sent, so an unknown one reads "Unknown browser".
"""

from __future__ import annotations

import re

# Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari", iOS browsers say "Safari".
BROWSERS = (
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"\bOPR/|\bOpera\b")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Firefox", re.compile(r"\bFirefox/|\bFxiOS/")),
    ("Chromium", re.compile(r"\bChromium/")),
    ("Chrome", re.compile(r"\bChrome/|\bCriOS/|HeadlessChrome/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
    ("curl", re.compile(r"^curl/")),
    ("Python", re.compile(r"^python-requests/|^Python-urllib/|^python-httpx/")),
)
SYSTEMS = (
    ("iOS", re.compile(r"\biPhone\b|\biPad\b|\biPod\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b|\bX11\b")),
)
UNKNOWN_BROWSER = "Unknown browser"


def _first(patterns: tuple[tuple[str, re.Pattern[str]], ...], header: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(header)), None)


def summarise(header: str) -> str:
    """'Firefox on Linux', 'Safari on iOS', 'Chrome', or 'Unknown browser' for what we cannot tell."""
    header = header.strip()
    browser = _first(BROWSERS, header)
    system = _first(SYSTEMS, header)
    if browser is None:
        return f"{UNKNOWN_BROWSER} on {system}" if system else UNKNOWN_BROWSER
    return f"{browser} on {system}" if system else browser
