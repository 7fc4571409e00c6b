"""Names that anyone can choose (a team's, a user's), made safe to put in a mail we send.

Invitation mail goes out from the operator's address, with a team name and an inviter name that
whoever signed up typed. A phisher would name a team "Support https://evil.example/login" or
"evil.example" and let the recipient's mail client turn it into a link. So in a mail a name is
only ever shown, never linked, and `for_mail` prepares it:

1. NFKC, so that compatibility forms (the full-width dot, at sign, colon and solidus, the one dot
   leader) become the ASCII characters the later steps look for;
2. control and format characters (newlines, bidi overrides, zero-width spaces: category C*)
   turned into spaces, and runs of whitespace into one space;
3. truncated to MAX_CHARS with an ellipsis;
4. "defanged": every "." "@" ":" "/" (and the ideographic full stop) that sits between two
   non-space characters, the ones that make "evil.example", "a@b.example" or "https://x/y" look
   like an address to an auto-linker, is put in square brackets: "evil[.]example",
   "https[:][/][/]evil[.]example[/]login". This is the convention of security advisories for
   quoting hostile addresses: no client links it, and unlike a look-alike dot (U+2024) it does not
   render as an address a reader might copy. Ordinary names are unchanged: a dot before a space or
   at the end ("Acme Inc.", "Dr. Who") joins nothing.

HTML escaping is left to Jinja's autoescape (on for templates ending in .html); the text part and
the Subject need none. The templates render names as text only, never inside an <a>.
"""

from __future__ import annotations

import re
import unicodedata

MAX_CHARS = 60
ELLIPSIS = "\u2026"
_LINK_GLUE = re.compile(r"(?<=\S)[.@:/\u3002](?=\S)")


def _printable(name: str) -> str:
    """`name` in NFKC, control and format characters as spaces, whitespace runs as one space."""
    normalised = unicodedata.normalize("NFKC", name)
    kept = "".join(c if not unicodedata.category(c).startswith("C") else " " for c in normalised)
    return " ".join(kept.split())


def _truncated(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1].rstrip() + ELLIPSIS


def for_mail(name: str, *, limit: int = MAX_CHARS) -> str:
    """`name` as a mail may show it: printable, at most `limit` characters, never link-shaped."""
    return _LINK_GLUE.sub(lambda m: f"[{m.group(0)}]", _truncated(_printable(name), limit))
