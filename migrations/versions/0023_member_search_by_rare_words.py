"""A member search looks up the term's rarest word in the trigram indexes, not every trigram of the term (issue 15).

`nyxcore_member_matches` (0017) gave PostgreSQL the whole term as one `LIKE '%term%'` for the trigram
indexes. A GIN scan for a term needs every one of its trigrams: it reads the rarest trigram's entries and
steps through every other trigram's list for each of them. A full name in a 50,000-member team ("Size
large 24999", whose first words every member's name shares) has eleven trigrams in 50,000 entries each:
about 2 ms of index reading for one row, against 0.05 ms for its rare word ("24999") alone, and four
times the same search in a 50-member team (bench/size.py, "search, a full name, one row").

The function now also gives the planner each word of the term (a run of three or more letters or digits,
at most four, the longest first) as a condition of its own, `lower(name) LIKE '%word%' OR email LIKE
'%word%'`: every match of the term contains each of its words, so the conditions do not change which
members match, and the planner, from the columns' statistics, reads the index for the rare word (or the
whole term, or walks the team in join order for a common one) and checks the rest on the rows it found.
A one-word term is searched as before. Without statistics the planner may look up a common word (the
cost of scanning it, never a wrong row); the statement is planned on every call (EXECUTE) with the
term's values, as before.

Isolation is unchanged: the same SECURITY DEFINER function (0017's reasons), answering for the team in
the context only (`app.tenant_id`, none without one), returning member ids of that team; the words are
letters and digits taken from the term and quoted as literals.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"  # rls.TENANT (a migration imports nothing)
NO_ID = {"-infinity": "00000000-0000-0000-0000-000000000000", "infinity": "ffffffff-ffff-ffff-ffff-ffffffffffff"}
MAX_WORDS = 4  # each word is a condition the planner estimates: a bound on planning


def _searches(*, with_words: bool) -> list[str]:
    """The forward and backward statements, with the term's words' conditions (format()'s `%s`) or without."""
    words, query, end = ("%s", "format($q$", "$q$, words)") if with_words else ("", "$q$", "$q$")
    searches = []
    for order, compare, start in (("", ">", "-infinity"), (" DESC", "<", "infinity")):
        searches.append(
            f"""{query}SELECT m.id FROM public.tenant_members AS m JOIN public.users AS u ON u.id = m.user_id
                WHERE m.tenant_id = $1 AND (m.joined_at, m.id) {compare} ($3, $4)
                  AND (lower(u.name) LIKE $2 ESCAPE '\\' OR u.email LIKE $2 ESCAPE '\\'){words}
                  AND (m.ends_at IS NULL OR m.ends_at > now())
                ORDER BY m.joined_at{order}, m.id{order} LIMIT $5{end}
                USING team, pattern, coalesce(after_at, '{start}'), coalesce(after_id, '{NO_ID[start]}'), max_rows"""
        )
    return searches


def _function(declare: str, prepare: str, searches: list[str]) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION public.nyxcore_member_matches(
            pattern text, after_at timestamptz, after_id uuid, backwards boolean, max_rows integer
        )
        RETURNS SETOF uuid
        LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 50
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            team uuid := {TENANT};{declare}
        BEGIN
            IF team IS NULL THEN
                RETURN;
            END IF;{prepare}
            IF backwards THEN
                RETURN QUERY EXECUTE {searches[1]};
            ELSE
                RETURN QUERY EXECUTE {searches[0]};
            END IF;
        END
        $$
        """


# The term's words: maximal runs of letters and digits in the LIKE pattern. A run holds no wildcard and
# no escape character (an escaped letter is that letter), so every value the pattern matches contains it.
WORDS_DECLARE = """
            words text := '';
            word text;"""
WORDS_PREPARE = f"""
            FOR word IN
                SELECT run FROM (SELECT DISTINCT hit[1] AS run FROM regexp_matches(pattern, '[[:alnum:]]{{3,}}', 'g') AS hit) AS runs
                WHERE '%' || run || '%' IS DISTINCT FROM pattern  -- the whole term is already the condition
                ORDER BY length(run) DESC, run
                LIMIT {MAX_WORDS}
            LOOP
                words := words || format(' AND (lower(u.name) LIKE %1$L OR u.email LIKE %1$L)', '%' || word || '%');
            END LOOP;"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_function(WORDS_DECLARE, WORDS_PREPARE, _searches(with_words=True)))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_function("", "", _searches(with_words=False)))  # 0017's function
