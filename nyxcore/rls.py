"""The SQL of row-level security, written once: the context settings as policies read them, and the
statements that protect a tenant-owned table. Migrations call these; no Flask here.

Every setting is read with `current_setting(..., true)` (no error when unset) and `NULLIF(..., '')`
(an ended transaction-local setting reads ''), so no context means no rows; ids are compared as
uuid to uuid so the `tenant_id` indexes are used.
"""

from __future__ import annotations

TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
USER = "NULLIF(current_setting('app.user_id', true), '')::uuid"
INVITE = "NULLIF(current_setting('app.invite_token_hash', true), '')"
OUTBOX = "NULLIF(current_setting('app.outbox_id', true), '')::uuid"
ACCOUNT_TOKEN = "NULLIF(current_setting('app.account_token_hash', true), '')"  # noqa: S105 (a setting's name)

# A row never moves to another team: not by a bug, not by a token holder, not by a WITH CHECK gap.
KEEP_TENANT_ID_FUNCTION = """
CREATE FUNCTION public.nyxcore_keep_tenant_id()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        RAISE EXCEPTION 'the tenant_id of a % row cannot change', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$
"""


def tenant_isolation_policy(table: str) -> str:
    """The policy that shows and accepts only the active team's rows of `table`."""
    return (
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
    )


def keep_tenant_id_trigger(table: str) -> str:
    """The trigger that refuses any UPDATE changing a row's tenant_id (needs KEEP_TENANT_ID_FUNCTION)."""
    return (
        f"CREATE TRIGGER keep_tenant_id BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION public.nyxcore_keep_tenant_id()"
    )


def protect_tenant_table(table: str) -> list[str]:
    """Everything a new tenant-owned table needs: forced RLS, the isolation policy, the tenant_id guard."""
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        tenant_isolation_policy(table),
        keep_tenant_id_trigger(table),
    ]
