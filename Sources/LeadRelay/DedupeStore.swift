import Foundation
import GRDB
import Kafka

/// Where an input record sits: the store keeps it beside the lead it carried.
public typealias RecordPosition = KafkaRecordPosition

/// A lead the API accepted: what a later DUPLICATE of it reports.
public struct SubmittedLead: Sendable, Equatable {
    public var dedupeKey: String
    public var requestId: String
    public var title: String
    public var submittedAt: Date
    public var httpStatus: Int
    public var attempts: Int
    public var firstAttemptAt: Date
    /// The input record that was submitted; nil for submissions stored before it was recorded.
    public var inputRecord: RecordPosition?
    /// The API's id of the lead, for a submission found in its listing by reconciliation; nil for a submission the
    /// API answered (and for a reconciled one in a store that does not keep it).
    public var leadId: String?

    /// Whether the submission was found in the API's listing rather than answered: its post's answer was lost, so
    /// it has no HTTP status (0), request id or title.
    public var isReconciled: Bool { httpStatus == 0 }

    public init(
        dedupeKey: String, requestId: String, title: String, submittedAt: Date, httpStatus: Int, attempts: Int,
        firstAttemptAt: Date, inputRecord: RecordPosition? = nil, leadId: String? = nil
    ) {
        self.dedupeKey = dedupeKey
        self.requestId = requestId
        self.title = title
        self.submittedAt = submittedAt
        self.httpStatus = httpStatus
        self.attempts = attempts
        self.firstAttemptAt = firstAttemptAt
        self.inputRecord = inputRecord
        self.leadId = leadId
    }
}

/// The keys submitted within the TTL, in a SQLite file (WAL mode) that survives restarts.
///
/// Only submissions are remembered: a dead-lettered key is not, so a re-driven record goes through.
/// Calls block for the length of one indexed SQLite statement (microseconds; a write also appends to the WAL).
public final class DedupeStore: Sendable {
    private let pool: DatabasePool
    private let ttl: TimeInterval

    private static let lookupSQL = """
        SELECT request_id, title, submitted_at, http_status, attempts, first_attempt_at,
            input_topic, input_partition, input_offset, lead_id
        FROM submitted_leads WHERE dedupe_key = ? AND submitted_at >= ?
        """
    private static let upsertSQL = """
        INSERT INTO submitted_leads
            (dedupe_key, request_id, title, submitted_at, http_status, attempts, first_attempt_at,
             input_topic, input_partition, input_offset, lead_id)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT(dedupe_key) DO UPDATE SET
            request_id = excluded.request_id, title = excluded.title, submitted_at = excluded.submitted_at,
            http_status = excluded.http_status, attempts = excluded.attempts,
            first_attempt_at = excluded.first_attempt_at, input_topic = excluded.input_topic,
            input_partition = excluded.input_partition, input_offset = excluded.input_offset,
            lead_id = excluded.lead_id
        """

    /// Opens (creating when missing) the store at `path`.
    public init(path: String, ttl: Duration) throws {
        var configuration = Configuration()
        configuration.label = "lead-relay.dedupe"
        configuration.busyMode = .timeout(10)
        // Reads come from the batch lookup and the records waiting for the API: two readers serve them.
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in
            // WAL with NORMAL keeps every commit across a process crash; only a power cut may lose the last ones.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Lookups hit random keys, so a big page cache buys little; the kernel's file cache serves the misses
            // without counting against the relay's resident memory (SQLite's default is 2 MiB per connection).
            try db.execute(sql: "PRAGMA cache_size = -512")
        }
        pool = try Self.retryingWhileAnotherRelayCreatesTheFile {
            try DatabasePool(path: path, configuration: configuration)
        }
        self.ttl = Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-submitted-leads") { db in
            try db.execute(
                sql: """
                    CREATE TABLE submitted_leads (
                        dedupe_key TEXT PRIMARY KEY NOT NULL,
                        request_id TEXT NOT NULL,
                        title TEXT NOT NULL,
                        submitted_at REAL NOT NULL,
                        http_status INTEGER NOT NULL,
                        attempts INTEGER NOT NULL,
                        first_attempt_at REAL NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX submitted_leads_by_time ON submitted_leads(submitted_at);
                    """)
        }
        // The submitted record's position tells a record re-read after a crash (its outcome is the
        // submission) from another record with the same key (a duplicate).
        migrator.registerMigration("v2-input-record") { db in
            try db.execute(
                sql: """
                    ALTER TABLE submitted_leads ADD COLUMN input_topic TEXT;
                    ALTER TABLE submitted_leads ADD COLUMN input_partition INTEGER;
                    ALTER TABLE submitted_leads ADD COLUMN input_offset INTEGER;
                    """)
        }
        // A submission found by reconciliation has the API's lead id, and no answer of its post.
        migrator.registerMigration("v3-lead-id") { db in
            try db.execute(sql: "ALTER TABLE submitted_leads ADD COLUMN lead_id TEXT")
        }
        // Keys whose post began and came to no outcome yet: one left by a crash is in doubt for the next run.
        migrator.registerMigration("v4-attempts-begun") { db in
            try db.execute(
                sql: """
                    CREATE TABLE attempts_begun (
                        dedupe_key TEXT PRIMARY KEY NOT NULL,
                        begun_at REAL NOT NULL
                    ) WITHOUT ROWID
                    """)
        }
        try Self.retryingWhileAnotherRelayCreatesTheFile { try migrator.migrate(pool) }
    }

    /// Relays starting at once on one new file race to create it: the loser's opening (switching it to WAL) or
    /// migration fails on the winner's lock or on what the winner created, and its next attempt finds it done.
    private static func retryingWhileAnotherRelayCreatesTheFile<T>(_ body: () throws -> T) throws -> T {
        var attempt = 1
        while true {
            do {
                return try body()
            } catch  where attempt < 5 {
                attempt += 1
                usleep(100_000)
            }
        }
    }

    /// The submission of `key` within the TTL before `now`, if any.
    public func submission(forKey key: String, now: Date = Date()) throws -> SubmittedLead? {
        try submissions(forKeys: [key], now: now)[key]
    }

    /// The submissions within the TTL before `now` of those of `keys` that have one, in one read: a batch of
    /// records pays for one trip to the reader's queue instead of one each.
    public func submissions(forKeys keys: Set<String>, now: Date = Date()) throws -> [String: SubmittedLead] {
        let cutoff = now.timeIntervalSince1970 - ttl
        // Plain SELECTs need no transaction around them: unsafeRead saves the BEGIN/COMMIT round of `read`.
        return try pool.unsafeRead { db in
            let statement = try db.cachedStatement(sql: Self.lookupSQL)
            var found: [String: SubmittedLead] = [:]
            for key in keys {
                guard let row = try Row.fetchOne(statement, arguments: [key, cutoff]) else { continue }
                found[key] = Self.submission(key: key, row: row)
            }
            return found
        }
    }

    private static func submission(key: String, row: Row) -> SubmittedLead {
        let inputTopic: String? = row[6]
        let inputPartition: Int32? = row[7]
        let inputOffset: Int64? = row[8]
        return SubmittedLead(
            dedupeKey: key, requestId: row[0], title: row[1],
            submittedAt: Date(timeIntervalSince1970: row[2]), httpStatus: row[3], attempts: row[4],
            firstAttemptAt: Date(timeIntervalSince1970: row[5]),
            inputRecord: inputTopic.flatMap { topic in
                guard let inputPartition, let inputOffset else { return nil }
                return RecordPosition(topic: topic, partition: inputPartition, offset: inputOffset)
            }, leadId: row[9])
    }

    /// Remembers `lead`, replacing an older (expired) submission of the same key; its attempt is over.
    public func recordSubmitted(_ lead: SubmittedLead) throws {
        try pool.write { db in
            let statement = try db.cachedStatement(sql: Self.upsertSQL)
            try statement.execute(arguments: [
                lead.dedupeKey, lead.requestId, lead.title, lead.submittedAt.timeIntervalSince1970, lead.httpStatus,
                lead.attempts, lead.firstAttemptAt.timeIntervalSince1970, lead.inputRecord?.topic,
                lead.inputRecord?.partition, lead.inputRecord?.offset, lead.leadId,
            ])
            try db.execute(sql: "DELETE FROM attempts_begun WHERE dedupe_key = ?", arguments: [lead.dedupeKey])
        }
    }

    /// Notes that a post of `key` begins (before its first attempt). Returns when an earlier one began, if one
    /// did and came to no outcome: a crash, or a record given up on while in doubt, left it.
    public func noteAttemptBegun(forKey key: String, at now: Date = Date()) throws -> Date? {
        try pool.write { db in
            let earlier = try Double.fetchOne(
                db, sql: "SELECT begun_at FROM attempts_begun WHERE dedupe_key = ?", arguments: [key])
            if earlier == nil {
                try db.execute(
                    sql: "INSERT INTO attempts_begun (dedupe_key, begun_at) VALUES (?, ?)",
                    arguments: [key, now.timeIntervalSince1970])
            }
            return earlier.map { Date(timeIntervalSince1970: $0) }
        }
    }

    /// Forgets the begun post of `key`: it was rejected, or never sent.
    public func forgetAttempt(forKey key: String) throws {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM attempts_begun WHERE dedupe_key = ?", arguments: [key])
        }
    }

    /// Forgets submissions older than the TTL; returns how many were removed.
    @discardableResult
    public func purgeExpired(now: Date = Date()) throws -> Int {
        let cutoff = now.timeIntervalSince1970 - ttl
        return try pool.write { db in
            try db.execute(sql: "DELETE FROM submitted_leads WHERE submitted_at < ?", arguments: [cutoff])
            let purged = db.changesCount
            try db.execute(sql: "DELETE FROM attempts_begun WHERE begun_at < ?", arguments: [cutoff])
            return purged
        }
    }

    /// Whether the store answers a read and accepts a write (for the readiness check).
    public func checkHealth() -> Bool {
        do {
            try pool.write { db in
                try db.execute(sql: "SELECT count(*) FROM (SELECT 1 FROM submitted_leads LIMIT 1)")
            }
            return true
        } catch {
            return false
        }
    }
}
