"""What every template may ask: the active membership, the user's teams, `can("operation")`, the top bar."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g, has_request_context, request, url_for
from flask_login import current_user

from nyxcore import authz, navigation, timezones
from nyxcore.fixed_cost import csrf_token_function, current_request
from nyxcore.services import notices

_SLOT = uuid.UUID(int=0)
# Fixed URLs kept per app (see fixed_urls); more than this many distinct ones (script roots a proxy
# sent, say) and the table starts again rather than grow.
_FIXED_URLS_KEPT = 512


def url_pattern(endpoint: str, argument: str, **values: Any) -> str:
    """`url_for(endpoint)` with the UUID `argument` left as `{}`, for `.format(id)` in each row of a table.

    Routing once per script root instead of once per row, as `fixed_urls` does for the layout's URLs
    (kept per app); the route stays the one source of the URL. With other `values`, a blueprint-relative
    endpoint or no request, it is routed every time.
    """
    if values or endpoint.startswith(".") or not has_request_context():
        return _routed_pattern(endpoint, argument, values)
    kept = current_app.extensions.setdefault(_URL_PATTERNS, {})
    key = (current_request().script_root, endpoint, argument)
    found = kept.get(key)
    return found if found is not None else _keep(kept, key, _routed_pattern(endpoint, argument, {}))


_URL_PATTERNS = "nyxcore.url_patterns"


def _routed_pattern(endpoint: str, argument: str, values: dict[str, Any]) -> str:
    values[argument] = _SLOT
    return url_for(endpoint, **values).replace(str(_SLOT), "{}")


def _keep(kept: dict[tuple[str, str, Any], str], key: tuple[str, str, Any], url: str) -> str:
    """Keep the just-routed `url` under `key` (script root, endpoint, what else names it) and return it; more
    than _FIXED_URLS_KEPT distinct ones (script roots a proxy sent, say) and `kept` starts again."""
    if len(kept) >= _FIXED_URLS_KEPT:
        kept.clear()
    kept[key] = url
    return url


def text_of(value: str) -> str:
    """`value` escaped for HTML as markupsafe's `escape` does it (the same five entities), as a plain string.

    For rows filled into fixed markup in Python (the team page's members and invitations, NyxBook's
    notes): most names and titles need nothing, so one search and no Markup object per value (a
    member row has four such values: `escape` cost more than the rest of the row's markup).
    """
    if _SPECIAL.search(value) is None:
        return value
    return (
        value.replace("&", "&amp;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


_SPECIAL = re.compile(r"[&<>'\"]")


def format_time(value: datetime | None) -> str:
    return f"{timezones.minutes(value)} UTC" if value else ""


ZONE_COOKIE = "nyxcore_tz"  # the zone the browser reports (static/zone.js sets it)


def viewer_zone() -> timezones.ViewerZone:
    """The zone this request shows times in: the account's setting, else the browser's, else UTC (once per request)."""
    zone: timezones.ViewerZone | None = g.get("viewer_zone")
    if zone is None:
        profile = current_user.time_zone if current_user.is_authenticated else None
        zone = g.viewer_zone = timezones.viewer_zone(profile, request.cookies.get(ZONE_COOKIE))
    return zone


def local_time(value: datetime | None) -> str:
    """A moment in the viewer's zone ("2026-12-02 09:14"); the page says which zone that is."""
    return timezones.minutes(viewer_zone().local(value)) if value else ""


def fixed_urls(app: Flask) -> Any:
    """The templates' `url_for`: Flask's, with a URL that names no object (a page's address, a static
    file's) built once per script root and kept, not routed again on every page.

    The layout of every signed-in page builds a dozen such URLs. They are the same on every request:
    this app has no `url_defaults`, no subdomain or host routing, and a relative URL depends only on
    the script root. Anything else (arguments, `_external`, a blueprint-relative `.endpoint`, no
    request) goes to Flask's `url_for` unchanged.
    """
    kept: dict[tuple[str, str, Any], str] = {}

    def url_for_template(endpoint: str, **values: Any) -> str:
        if endpoint.startswith(".") or not has_request_context():
            return url_for(endpoint, **values)
        if values and (endpoint != "static" or len(values) != 1 or "filename" not in values):
            return url_for(endpoint, **values)
        key = (current_request().script_root, endpoint, values.get("filename"))
        found = kept.get(key)
        return found if found is not None else _keep(kept, key, app.url_for(endpoint, **values))

    return url_for_template


def _is_flask_wtfs_csrf_processor(processor: Any) -> bool:
    """Flask-WTF's context processor: a lambda of flask_wtf.csrf offering csrf_token and csrf_meta_tag."""
    return getattr(processor, "__module__", "") == "flask_wtf.csrf" and processor.__name__ == "<lambda>"


def init_app(app: Flask) -> None:
    app.jinja_env.globals["url_for"] = fixed_urls(app)
    # In place of Flask-WTF's generate_csrf, which it offers twice: as a global and from a context
    # processor (whose value would win over the global); the processor goes, the global is ours.
    app.jinja_env.globals["csrf_token"] = csrf_token_function(app)
    processors = app.template_context_processors.setdefault(None, [])
    processors[:] = [each for each in processors if not _is_flask_wtfs_csrf_processor(each)]

    @app.context_processor
    def inject() -> dict[str, Any]:
        return {
            "membership": authz.current_membership(),
            "can": authz.can,
            "needs_verification": authz.needs_verification,
            "my_teams": authz.my_teams,
            "more_teams": authz.more_teams,
            "nav_entries": navigation.visible_entries,
            "viewer_zone": viewer_zone,
        }

    app.jinja_env.filters["time"] = format_time
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["last_day"] = notices.last_day  # a membership's end: "31 Jan 2027"
    app.jinja_env.filters["last_date"] = notices.last_date
