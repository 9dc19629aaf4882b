import Logging
import PostgresNIO

/// The tables and functions of the shared state, created and migrated at start-up by whichever relay comes first.
///
/// Every relay runs `prepare` as it starts, and several may start at once: the whole migration runs in one
/// transaction under `pg_advisory_xact_lock(schemaLockID)`, so one relay creates what is missing while the others
/// wait, then find every version applied and change nothing. (`CREATE TABLE IF NOT EXISTS` alone is not enough:
/// two sessions creating the same table at once make one of them fail on the catalog's unique index.)
///
/// Each operation of the store and of the budget is one statement, so one round trip. Those that decide on rows
/// other sessions may be changing at that moment are PL/pgSQL functions: a VOLATILE function takes a new snapshot
/// for each statement in it, so what it reads after waiting for a lock includes what the lock's previous holder
/// committed. (A single plain statement reads with the snapshot taken when it began, before any lock it waits for.)
public enum SharedStateSchema {
    /// Serializes migrations across every relay of the database; the value is arbitrary but fixed forever.
    static let schemaLockID: Int64 = 0x6C65_6164_7265_6C79

    struct Migration {
        var version: Int32
        var statements: [String]
    }

    /// In order; a released migration is never edited, a change is a new one.
    static let migrations: [Migration] = [
        Migration(
            version: 1,
            statements: [
                dedupeTable, dedupeSubmittedIndex, claimFunction, renewFunction,
                recordSubmittedFunction, releaseFunction, budgetTable, budgetIndex, budgetAcquireFunction,
                budgetReleaseFunction,
            ]),
        Migration(
            version: 2,
            statements: [
                budgetWriteColumns, dropSevenArgumentBudgetAcquire, budgetAcquireFunctionCountingWrites,
                budgetWrittenFunction,
            ]),
        Migration(version: 3, statements: [dropSevenArgumentBudgetAcquire, budgetAcquireFunctionDatingAhead]),
        Migration(version: 4, statements: [dedupeLeadIdColumn, recordSubmittedWithLeadIdFunction]),
        Migration(version: 5, statements: [giveBackFunction]),
        Migration(version: 6, statements: [budgetHoldTable, budgetHoldFunction, budgetAcquireFunctionHonouringHolds]),
    ]

    /// Creates or migrates the tables and functions of `SharedLeadStore` and `SharedRateBudget` (one schema for
    /// both); safe when several relays do it at once. `timeout` bounds the wait, for the lock included.
    public static func prepare(client: PostgresClient, logger: Logger, timeout: Duration = .seconds(30))
        async throws
    {
        try await SharedDatabase(client: client, logger: logger, operationTimeout: timeout).perform(
            "schema migration"
        ) { client, logger in
            try await migrate(client: client, logger: logger)
        }
    }

    static func migrate(client: PostgresClient, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(schemaLockID))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS lead_relay_schema_migrations (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT clock_timestamp())
                """, logger: logger)
            var applied = Set<Int32>()
            for try await version in try await connection.query(
                "SELECT version FROM lead_relay_schema_migrations", logger: logger
            ).decode(Int32.self) {
                applied.insert(version)
            }
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO lead_relay_schema_migrations (version) VALUES (\(migration.version))",
                    logger: logger)
                logger.info("shared state schema migrated", metadata: ["version": "\(migration.version)"])
            }
        }
    }

    /// One row per dedupe key: a claim while a relay works on the lead, then its submission.
    /// `claim_token` stays on the submission so that a `recordSubmitted` retried after a lost answer is recognised.
    static let dedupeTable = """
        CREATE TABLE lead_relay_dedupe (
            dedupe_key text PRIMARY KEY,
            state text NOT NULL CHECK (state IN ('claimed', 'submitted')),
            claim_owner text NOT NULL,
            claim_token uuid NOT NULL,
            claim_expires_at timestamptz,
            input_topic text NOT NULL,
            input_partition integer NOT NULL,
            input_offset bigint NOT NULL,
            attempts integer NOT NULL,
            first_attempt_at timestamptz NOT NULL,
            request_id text,
            title text,
            http_status integer,
            submitted_at timestamptz,
            CHECK (state <> 'claimed' OR claim_expires_at IS NOT NULL),
            CHECK (state <> 'submitted' OR (request_id IS NOT NULL AND title IS NOT NULL
                AND http_status IS NOT NULL AND submitted_at IS NOT NULL)))
        """

    static let dedupeSubmittedIndex = """
        CREATE INDEX lead_relay_dedupe_submitted_at ON lead_relay_dedupe (submitted_at) WHERE state = 'submitted'
        """

    /// The columns every claim answer has, in `ClaimRow`'s order.
    static let claimColumns = """
        outcome text, claim_owner text, claim_token uuid, claim_remaining_seconds double precision,
        input_topic text, input_partition integer, input_offset bigint, attempts integer,
        first_attempt_at timestamptz, request_id text, title text, http_status integer, submitted_at timestamptz
        """

    /// Claims `p_key` for `p_owner` with `p_token`, or says why not. Outcomes:
    /// - `claimed`: the key was free (never seen, released, or its submission older than the TTL), or is already
    ///   claimed with `p_token` (a claim retried after its answer was lost);
    /// - `submitted`: submitted within the TTL; the row is the submission;
    /// - `held`: claimed by another token whose claim has not expired; the row is that claim;
    /// - `taken_over`: claimed by another token whose claim expired without an outcome, now ours with one more
    ///   attempt; the row names the previous owner and input record.
    ///
    /// The insert waits for a concurrent insert of the same key to commit or roll back; `FOR UPDATE` waits for a
    /// concurrent change of the row and reads its latest version. The loop repeats only when the row was deleted
    /// between the two (a release).
    static let claimFunction = """
        CREATE FUNCTION lead_relay_claim(p_key text, p_owner text, p_token uuid, p_topic text,
            p_partition integer, p_offset bigint, p_claim_ttl_seconds double precision,
            p_submission_ttl_seconds double precision)
        RETURNS TABLE (\(claimColumns))
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
            existing lead_relay_dedupe%ROWTYPE;
            t timestamptz;
        BEGIN
            LOOP
                t := clock_timestamp();
                INSERT INTO lead_relay_dedupe (dedupe_key, state, claim_owner, claim_token, claim_expires_at,
                    input_topic, input_partition, input_offset, attempts, first_attempt_at)
                VALUES (p_key, 'claimed', p_owner, p_token, t + p_claim_ttl_seconds * interval '1 second',
                    p_topic, p_partition, p_offset, 1, t)
                ON CONFLICT (dedupe_key) DO NOTHING;
                IF FOUND THEN
                    RETURN QUERY SELECT 'claimed'::text, p_owner, p_token, p_claim_ttl_seconds, p_topic, p_partition,
                        p_offset, 1, t, NULL::text, NULL::text, NULL::integer, NULL::timestamptz;
                    RETURN;
                END IF;
                SELECT * INTO existing FROM lead_relay_dedupe WHERE dedupe_key = p_key FOR UPDATE;
                CONTINUE WHEN NOT FOUND;
                t := clock_timestamp();
                IF existing.state = 'submitted'
                    AND existing.submitted_at > t - p_submission_ttl_seconds * interval '1 second' THEN
                    RETURN QUERY SELECT 'submitted'::text, existing.claim_owner, NULL::uuid, NULL::double precision,
                        existing.input_topic, existing.input_partition, existing.input_offset, existing.attempts,
                        existing.first_attempt_at, existing.request_id, existing.title, existing.http_status,
                        existing.submitted_at;
                ELSIF existing.state = 'claimed' AND existing.claim_token = p_token THEN
                    UPDATE lead_relay_dedupe SET claim_expires_at = t + p_claim_ttl_seconds * interval '1 second'
                        WHERE dedupe_key = p_key;
                    RETURN QUERY SELECT 'claimed'::text, p_owner, p_token, p_claim_ttl_seconds, existing.input_topic,
                        existing.input_partition, existing.input_offset, existing.attempts, existing.first_attempt_at,
                        NULL::text, NULL::text, NULL::integer, NULL::timestamptz;
                ELSIF existing.state = 'claimed' AND existing.claim_expires_at > t THEN
                    RETURN QUERY SELECT 'held'::text, existing.claim_owner, NULL::uuid,
                        extract(epoch FROM existing.claim_expires_at - t)::double precision, existing.input_topic,
                        existing.input_partition, existing.input_offset, existing.attempts, existing.first_attempt_at,
                        NULL::text, NULL::text, NULL::integer, NULL::timestamptz;
                ELSIF existing.state = 'claimed' THEN
                    UPDATE lead_relay_dedupe SET claim_owner = p_owner, claim_token = p_token,
                        claim_expires_at = t + p_claim_ttl_seconds * interval '1 second', input_topic = p_topic,
                        input_partition = p_partition, input_offset = p_offset, attempts = existing.attempts + 1
                        WHERE dedupe_key = p_key;
                    RETURN QUERY SELECT 'taken_over'::text, existing.claim_owner, p_token, p_claim_ttl_seconds,
                        existing.input_topic, existing.input_partition, existing.input_offset, existing.attempts + 1,
                        existing.first_attempt_at, NULL::text, NULL::text, NULL::integer, NULL::timestamptz;
                ELSE
                    UPDATE lead_relay_dedupe SET state = 'claimed', claim_owner = p_owner, claim_token = p_token,
                        claim_expires_at = t + p_claim_ttl_seconds * interval '1 second', input_topic = p_topic,
                        input_partition = p_partition, input_offset = p_offset, attempts = 1, first_attempt_at = t,
                        request_id = NULL, title = NULL, http_status = NULL, submitted_at = NULL
                        WHERE dedupe_key = p_key;
                    RETURN QUERY SELECT 'claimed'::text, p_owner, p_token, p_claim_ttl_seconds, p_topic, p_partition,
                        p_offset, 1, t, NULL::text, NULL::text, NULL::integer, NULL::timestamptz;
                END IF;
                RETURN;
            END LOOP;
        END $$
        """

    /// Extends a claim still held with `p_token`; returns whether it was.
    static let renewFunction = """
        CREATE FUNCTION lead_relay_renew_claim(p_key text, p_token uuid, p_claim_ttl_seconds double precision)
        RETURNS boolean LANGUAGE sql VOLATILE AS $$
            WITH renewed AS (
                UPDATE lead_relay_dedupe
                SET claim_expires_at = clock_timestamp() + p_claim_ttl_seconds * interval '1 second'
                WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed'
                RETURNING 1)
            SELECT EXISTS (SELECT 1 FROM renewed)
        $$
        """

    /// Turns the claim held with `p_token` into the submission and wakes the relays waiting for the key; returns
    /// the submission, also when it was recorded before with the same token (a retry), and no row when the claim
    /// was taken over meanwhile.
    static let recordSubmittedFunction = """
        CREATE FUNCTION lead_relay_record_submitted(p_key text, p_token uuid, p_request_id text, p_title text,
            p_http_status integer)
        RETURNS TABLE (\(claimColumns))
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        BEGIN
            UPDATE lead_relay_dedupe SET state = 'submitted', claim_expires_at = NULL, request_id = p_request_id,
                title = p_title, http_status = p_http_status, submitted_at = clock_timestamp()
                WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed';
            IF FOUND THEN
                PERFORM pg_notify('lead_relay_claims', md5(p_key));
            END IF;
            RETURN QUERY SELECT 'submitted'::text, d.claim_owner, d.claim_token, NULL::double precision,
                d.input_topic, d.input_partition, d.input_offset, d.attempts, d.first_attempt_at, d.request_id,
                d.title, d.http_status, d.submitted_at
                FROM lead_relay_dedupe d
                WHERE d.dedupe_key = p_key AND d.claim_token = p_token AND d.state = 'submitted';
        END $$
        """

    /// Frees the key claimed with `p_token` (the lead was rejected) and wakes the relays waiting for it; returns
    /// whether the claim was still held.
    static let releaseFunction = """
        CREATE FUNCTION lead_relay_release_claim(p_key text, p_token uuid)
        RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            DELETE FROM lead_relay_dedupe WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed';
            IF FOUND THEN
                PERFORM pg_notify('lead_relay_claims', md5(p_key));
            END IF;
            RETURN FOUND;
        END $$
        """

    /// One row per grant: its start, counted in the window, and its in-flight lease, counted until released or
    /// expired. Rows that can no longer count in either are pruned by the next grant of the same budget.
    static let budgetTable = """
        CREATE TABLE lead_relay_budget_grants (
            grant_id uuid PRIMARY KEY,
            budget_key text NOT NULL,
            holder text NOT NULL,
            started_at timestamptz NOT NULL,
            lease_expires_at timestamptz NOT NULL,
            released_at timestamptz)
        """

    static let budgetIndex = """
        CREATE INDEX lead_relay_budget_grants_key_started ON lead_relay_budget_grants (budget_key, started_at)
        """

    /// Grants one start of budget `p_key` if the budget allows it now, under the budget's advisory lock (so grants
    /// of one budget are decided one after another, each seeing every grant and release committed before it).
    ///
    /// The instant of a grant is the later of the database's clock and the budget's latest start: grants are then
    /// in the order the lock gave them, also if the database host's clock is set back. Returns one row: `granted`;
    /// the grant's start and lease expiry when granted; otherwise `retry_after_seconds`, when the budget allows a
    /// start at the earliest unless a lease is released first (the oldest start in the way leaves the window, or
    /// the earliest lease expires); and the counts it decided on.
    static let budgetAcquireFunction = """
        CREATE FUNCTION lead_relay_budget_acquire(p_key text, p_holder text, p_grant_id uuid, p_max_in_flight integer,
            p_rate_limit integer, p_window_seconds double precision, p_lease_seconds double precision)
        RETURNS TABLE (granted boolean, started_at timestamptz, lease_expires_at timestamptz,
            retry_after_seconds double precision, in_flight integer, starts_in_window integer)
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
            t timestamptz;
            window_length interval := p_window_seconds * interval '1 second';
            starts integer;
            leases integer;
            blocking_start timestamptz;
            earliest_expiry timestamptz;
            wait_for_window double precision := 0;
            wait_for_lease double precision := 0;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('lead_relay_budget:' || p_key));
            SELECT greatest(clock_timestamp(), max(g.started_at)) INTO t
                FROM lead_relay_budget_grants g WHERE g.budget_key = p_key;
            DELETE FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key AND g.started_at <= t - window_length
                AND (g.released_at IS NOT NULL OR g.lease_expires_at <= t);
            SELECT count(*) INTO starts FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key AND g.started_at > t - window_length;
            SELECT count(*), min(g.lease_expires_at) INTO leases, earliest_expiry FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key AND g.released_at IS NULL AND g.lease_expires_at > t;
            IF starts < p_rate_limit AND leases < p_max_in_flight THEN
                INSERT INTO lead_relay_budget_grants (grant_id, budget_key, holder, started_at, lease_expires_at)
                    VALUES (p_grant_id, p_key, p_holder, t, t + p_lease_seconds * interval '1 second');
                RETURN QUERY SELECT true, t, t + p_lease_seconds * interval '1 second', NULL::double precision,
                    leases + 1, starts + 1;
                RETURN;
            END IF;
            IF starts >= p_rate_limit THEN
                -- The start whose exit from the window leaves p_rate_limit - 1 in it.
                SELECT g.started_at INTO blocking_start FROM lead_relay_budget_grants g
                    WHERE g.budget_key = p_key AND g.started_at > t - window_length
                    ORDER BY g.started_at OFFSET starts - p_rate_limit LIMIT 1;
                wait_for_window := extract(epoch FROM blocking_start + window_length - t);
            END IF;
            IF leases >= p_max_in_flight THEN
                wait_for_lease := extract(epoch FROM earliest_expiry - t);
            END IF;
            RETURN QUERY SELECT false, NULL::timestamptz, NULL::timestamptz,
                greatest(wait_for_window, wait_for_lease), leases, starts;
        END $$
        """

    /// Ends a grant's lease and wakes the relays waiting on the budget. Its start still counts in the window.
    static let budgetReleaseFunction = """
        CREATE FUNCTION lead_relay_budget_release(p_grant_id uuid)
        RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            released_key text;
        BEGIN
            UPDATE lead_relay_budget_grants SET released_at = clock_timestamp()
                WHERE grant_id = p_grant_id AND released_at IS NULL
                RETURNING budget_key INTO released_key;
            IF FOUND THEN
                PERFORM pg_notify('lead_relay_budget', md5(released_key));
            END IF;
            RETURN FOUND;
        END $$
        """

    // MARK: - Version 2: starts counted at their writes, grants paced

    /// `written_at`: when the grant's request head was written, by the database's clock (an upper bound of it:
    /// the grant's instant plus the time from sending the grant's query to the write, on the relay's clock).
    /// `paced_at`: the instant the grant's pacing counts it at.
    static let budgetWriteColumns = """
        ALTER TABLE lead_relay_budget_grants ADD COLUMN written_at timestamptz, ADD COLUMN paced_at timestamptz
        """

    /// Versions 1 and 2 of the decision: each next version's answer gains a column, which `CREATE OR REPLACE`
    /// cannot do. A relay of version 2 asking after migration 3 gets an error and starts nothing until it is
    /// replaced: it would write a grant dated ahead at once.
    static let dropSevenArgumentBudgetAcquire = """
        DROP FUNCTION lead_relay_budget_acquire(text, text, uuid, integer, integer, double precision,
            double precision)
        """

    /// Version 1's decision, with each start counted at its write instead of its grant, and grants paced.
    ///
    /// A start counts in the window at `written_at` once its relay reported the write; before that, from its grant
    /// until it is released or its lease expires, at that instant (`least(released_at, lease_expires_at)`), which
    /// is at or after any write it had: so a grant used late (its relay paused or slow between grant and write)
    /// still counts where its request went out. An unreported, live grant thus counts in every window, and the
    /// report (one more round trip, off the request's path) gives the window its real instant back.
    ///
    /// Grants are also paced: one per `p_window_seconds / p_rate_limit` at most, counted from the previous grant's
    /// due instant (`paced_at`, at most half a step before the grant) so that a late asker does not push every
    /// later grant back. A burst of starts at once reaches the API in an order and at instants that vary by more
    /// than a margin should have to cover.
    ///
    /// A refusal says whether a notification may end the wait early (`notified`): when a lease is in the way, or an
    /// unreported start, a release or a write report may free the budget before `retry_after_seconds`; when only
    /// time is (the window, the pacing step), nothing can, and the asker sleeps instead of waking on every other
    /// relay's release.
    static let budgetAcquireFunctionCountingWrites = """
        CREATE FUNCTION lead_relay_budget_acquire(p_key text, p_holder text, p_grant_id uuid,
            p_max_in_flight integer, p_rate_limit integer, p_window_seconds double precision,
            p_lease_seconds double precision)
        RETURNS TABLE (granted boolean, started_at timestamptz, lease_expires_at timestamptz,
            retry_after_seconds double precision, in_flight integer, starts_in_window integer, notified boolean)
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
            t timestamptz;
            window_length interval := p_window_seconds * interval '1 second';
            unreported_blocks boolean := false;
            step interval := p_window_seconds / p_rate_limit * interval '1 second';
            starts integer;
            leases integer;
            blocking_start timestamptz;
            earliest_expiry timestamptz;
            last_paced timestamptz;
            paced timestamptz;
            wait_for_window double precision := 0;
            wait_for_lease double precision := 0;
            wait_for_pace double precision := 0;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('lead_relay_budget:' || p_key));
            SELECT greatest(clock_timestamp(), max(g.started_at)) INTO t
                FROM lead_relay_budget_grants g WHERE g.budget_key = p_key;
            DELETE FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key
                AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) <= t - window_length
                AND (g.released_at IS NOT NULL OR g.lease_expires_at <= t);
            SELECT count(*) INTO starts FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key
                AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) > t - window_length;
            SELECT count(*), min(g.lease_expires_at) INTO leases, earliest_expiry FROM lead_relay_budget_grants g
                WHERE g.budget_key = p_key AND g.released_at IS NULL AND g.lease_expires_at > t;
            SELECT max(g.paced_at) INTO last_paced FROM lead_relay_budget_grants g WHERE g.budget_key = p_key;
            IF starts < p_rate_limit AND leases < p_max_in_flight
                AND (last_paced IS NULL OR t >= last_paced + step) THEN
                paced := CASE WHEN last_paced IS NULL THEN t ELSE greatest(last_paced + step, t - step / 2) END;
                INSERT INTO lead_relay_budget_grants (grant_id, budget_key, holder, started_at, lease_expires_at,
                    paced_at)
                    VALUES (p_grant_id, p_key, p_holder, t, t + p_lease_seconds * interval '1 second', paced);
                RETURN QUERY SELECT true, t, t + p_lease_seconds * interval '1 second', NULL::double precision,
                    leases + 1, starts + 1, false;
                RETURN;
            END IF;
            IF starts >= p_rate_limit THEN
                -- The start whose exit from the window leaves p_rate_limit - 1 in it.
                SELECT coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) INTO blocking_start
                    FROM lead_relay_budget_grants g
                    WHERE g.budget_key = p_key
                    AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) > t - window_length
                    ORDER BY 1 OFFSET starts - p_rate_limit LIMIT 1;
                wait_for_window := extract(epoch FROM blocking_start + window_length - t);
                unreported_blocks := blocking_start > t;
            END IF;
            IF leases >= p_max_in_flight THEN
                wait_for_lease := extract(epoch FROM earliest_expiry - t);
            END IF;
            IF last_paced IS NOT NULL AND t < last_paced + step THEN
                wait_for_pace := extract(epoch FROM last_paced + step - t);
            END IF;
            RETURN QUERY SELECT false, NULL::timestamptz, NULL::timestamptz,
                greatest(wait_for_window, wait_for_lease, wait_for_pace), leases, starts,
                leases >= p_max_in_flight OR unreported_blocks;
        END $$
        """

    /// Records the write of a grant's request, `p_seconds_after_grant` after its instant, and wakes the relays
    /// waiting on the budget: an unreported grant counted in every window, this one now counts at its write.
    static let budgetWrittenFunction = """
        CREATE FUNCTION lead_relay_budget_written(p_grant_id uuid, p_seconds_after_grant double precision)
        RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            written_key text;
        BEGIN
            UPDATE lead_relay_budget_grants
                SET written_at = started_at + greatest(p_seconds_after_grant, 0) * interval '1 second'
                WHERE grant_id = p_grant_id AND written_at IS NULL
                RETURNING budget_key INTO written_key;
            IF FOUND THEN
                PERFORM pg_notify('lead_relay_budget', md5(written_key));
            END IF;
            RETURN FOUND;
        END $$
        """

    // MARK: - Version 3: grants dated ahead

    /// Version 2's decision, with the grant dated at the earliest instant the budget allows a start (`started_at`,
    /// at most `p_horizon_seconds` ahead of the database's clock) instead of refused until that instant comes: the
    /// relay writes its request once the database's clock has passed `started_at`, so a start loses neither the
    /// sleep nor the round trip between a refusal and the next ask. `database_now` is the clock read the decision
    /// was made at, and `answered_at` one read as the answer is returned: the relay maps the database's clock onto
    /// its own with them (the first bounds the offset from above, the second from below).
    ///
    /// The window counts at `started_at` every start whose instant (`written_at`, or before its report its lease's
    /// end) is after `started_at - window`; moving `started_at` later only drops starts from that count, so the
    /// earliest instant with fewer than `p_rate_limit` of them is the exit of the one in the way from the window.
    /// Leases are counted at the decision, so a lease still live then counts even if it ends before `started_at`.
    static let budgetAcquireFunctionDatingAhead = budgetAcquireDatingAhead(honouringHolds: false)

    /// The text of version 3's decision; with `honouringHolds` (version 6), no start is dated before the budget's
    /// hold ends.
    static func budgetAcquireDatingAhead(honouringHolds: Bool) -> String {
        let create = honouringHolds ? "CREATE OR REPLACE" : "CREATE"
        return """
            \(create) FUNCTION lead_relay_budget_acquire(p_key text, p_holder text, p_grant_id uuid,
                p_max_in_flight integer, p_rate_limit integer, p_window_seconds double precision,
                p_lease_seconds double precision, p_horizon_seconds double precision)
            RETURNS TABLE (granted boolean, started_at timestamptz, lease_expires_at timestamptz,
                retry_after_seconds double precision, in_flight integer, starts_in_window integer, notified boolean,
                database_now timestamptz, answered_at timestamptz)
            LANGUAGE plpgsql VOLATILE AS $$
            #variable_conflict use_column
            DECLARE
                now_at timestamptz;
                start_at timestamptz;
                window_length interval := p_window_seconds * interval '1 second';
                step interval := p_window_seconds / p_rate_limit * interval '1 second';
                unreported_blocks boolean := false;
                starts integer;
                leases integer;
                blocking_start timestamptz;
                earliest_expiry timestamptz;
                last_paced timestamptz;
                hold_end timestamptz;
            BEGIN
                PERFORM pg_advisory_xact_lock(hashtext('lead_relay_budget:' || p_key));
                now_at := clock_timestamp();
                DELETE FROM lead_relay_budget_grants g
                    WHERE g.budget_key = p_key
                    AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) <= now_at - window_length
                    AND (g.released_at IS NOT NULL OR g.lease_expires_at <= now_at);
                SELECT count(*), min(g.lease_expires_at) INTO leases, earliest_expiry FROM lead_relay_budget_grants g
                    WHERE g.budget_key = p_key AND g.released_at IS NULL AND g.lease_expires_at > now_at;
                IF leases >= p_max_in_flight THEN
                    RETURN QUERY SELECT false, NULL::timestamptz, NULL::timestamptz,
                        extract(epoch FROM earliest_expiry - now_at)::double precision, leases, NULL::integer, true,
                        now_at, clock_timestamp();
                    RETURN;
                END IF;
                SELECT max(g.paced_at) INTO last_paced FROM lead_relay_budget_grants g WHERE g.budget_key = p_key;
                \(honouringHolds ? holdEndStatement : "")
                start_at := greatest(now_at, last_paced + step, hold_end);
                SELECT count(*) INTO starts FROM lead_relay_budget_grants g
                    WHERE g.budget_key = p_key
                    AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) > start_at - window_length;
                IF starts >= p_rate_limit THEN
                    SELECT coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) INTO blocking_start
                        FROM lead_relay_budget_grants g
                        WHERE g.budget_key = p_key
                        AND coalesce(g.written_at, least(g.released_at, g.lease_expires_at)) > start_at - window_length
                        ORDER BY 1 OFFSET starts - p_rate_limit LIMIT 1;
                    start_at := blocking_start + window_length;
                    unreported_blocks := blocking_start > now_at;
                    starts := p_rate_limit - 1;
                END IF;
                IF start_at > now_at + p_horizon_seconds * interval '1 second' THEN
                    RETURN QUERY SELECT false, NULL::timestamptz, NULL::timestamptz,
                        extract(epoch FROM start_at - now_at)::double precision - p_horizon_seconds, leases, starts,
                        unreported_blocks, now_at, clock_timestamp();
                    RETURN;
                END IF;
                INSERT INTO lead_relay_budget_grants (grant_id, budget_key, holder, started_at, lease_expires_at,
                    paced_at)
                    VALUES (p_grant_id, p_key, p_holder, start_at, start_at + p_lease_seconds * interval '1 second',
                        greatest(coalesce(last_paced + step, start_at), start_at - step / 2));
                RETURN QUERY SELECT true, start_at, start_at + p_lease_seconds * interval '1 second',
                    NULL::double precision, leases + 1, starts + 1, false, now_at, clock_timestamp();
            END $$
            """
    }

    // MARK: - Version 4: the API's lead id of a reconciled submission

    /// A submission found in the API's listing (its post's answer was lost) has the listing's lead id, and no
    /// request id, title or status of its own (empty, and 0).
    static let dedupeLeadIdColumn = "ALTER TABLE lead_relay_dedupe ADD COLUMN lead_id text"

    /// Version 1's record of a submission, keeping the lead id too; in one statement, so that both or neither are
    /// recorded. A relay of an earlier version still calls the five-argument one, which this one leaves in place.
    static let recordSubmittedWithLeadIdFunction = """
        CREATE FUNCTION lead_relay_record_submitted(p_key text, p_token uuid, p_request_id text, p_title text,
            p_http_status integer, p_lead_id text)
        RETURNS TABLE (\(claimColumns))
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        BEGIN
            UPDATE lead_relay_dedupe SET lead_id = p_lead_id
                WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed';
            RETURN QUERY SELECT * FROM lead_relay_record_submitted(p_key, p_token, p_request_id, p_title,
                p_http_status);
        END $$
        """

    // MARK: - Version 5: claims given back unused

    /// Gives back the claim held with `p_token` by a relay that posted nothing under it (its lead was abandoned, or
    /// its task cancelled while the claim was out), and wakes the relays waiting for the key; returns whether the
    /// claim was still held. A first attempt's claim (`attempts = 1`) is deleted: nobody posted the lead, so the
    /// key is free. A claim taken over (`attempts > 1`) keeps its row and expires now: an earlier owner may have
    /// posted the lead, so the next claim takes it over at once and looks the lead up first (in doubt).
    static let giveBackFunction = """
        CREATE FUNCTION lead_relay_give_back_claim(p_key text, p_token uuid)
        RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            DELETE FROM lead_relay_dedupe
                WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed' AND attempts = 1;
            IF NOT FOUND THEN
                UPDATE lead_relay_dedupe SET claim_expires_at = least(claim_expires_at, clock_timestamp())
                    WHERE dedupe_key = p_key AND claim_token = p_token AND state = 'claimed';
            END IF;
            IF FOUND THEN
                PERFORM pg_notify('lead_relay_claims', md5(p_key));
            END IF;
            RETURN FOUND;
        END $$
        """

    // MARK: - Version 6: the API's Retry-After holds every relay of the budget

    /// A budget's hold: no start of it is dated before `held_until`, by the database's clock.
    static let budgetHoldTable = """
        CREATE TABLE lead_relay_budget_holds (
            budget_key text PRIMARY KEY,
            held_until timestamptz NOT NULL)
        """

    /// Holds budget `p_key` for `p_seconds` from the database's clock now, or longer when a hold already lasts
    /// longer; returns when the hold ends.
    static let budgetHoldFunction = """
        CREATE FUNCTION lead_relay_budget_hold(p_key text, p_seconds double precision)
        RETURNS timestamptz LANGUAGE sql VOLATILE AS $$
            INSERT INTO lead_relay_budget_holds AS h (budget_key, held_until)
                VALUES (p_key, clock_timestamp() + greatest(p_seconds, 0) * interval '1 second')
            ON CONFLICT (budget_key) DO UPDATE SET held_until = greatest(h.held_until, excluded.held_until)
            RETURNING held_until
        $$
        """

    /// Version 3's decision, whose earliest start is also the end of the budget's hold: a hold's end past the
    /// horizon is a refusal that only time ends (`notified` false), like the window's. The arguments and the
    /// answer are version 3's, so relays of version 5 still running get the hold too (they only do not set one).
    static let budgetAcquireFunctionHonouringHolds = budgetAcquireDatingAhead(honouringHolds: true)

    /// Reads the budget's hold, under the budget's advisory lock: a hold committed before the decision is seen.
    static let holdEndStatement =
        "SELECT h.held_until INTO hold_end FROM lead_relay_budget_holds h WHERE h.budget_key = p_key;"
}
