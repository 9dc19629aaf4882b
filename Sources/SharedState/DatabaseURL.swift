import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// A `postgres://user:password@host:port/database[?sslmode=disable|require|verify-full]` URL, parsed.
///
/// The password is a secret: `description` shows `[redacted]` in its place, and no `DatabaseURL.Invalid` message
/// contains it (nor the rest of the URL, which may carry it in a place the parser could not recognise).
public struct DatabaseURL: Sendable, Equatable, CustomStringConvertible {
    /// How the connection is protected, as libpq's `sslmode` of the same name.
    public enum TLSMode: String, Sendable, Equatable, CaseIterable {
        /// Plain TCP.
        case disable
        /// TLS, without checking the server's certificate (libpq's `require`).
        case require
        /// TLS, with the certificate checked against the system's trust roots and the host name.
        case verifyFull = "verify-full"
    }

    /// What is wrong with a URL; the message never contains the URL's password.
    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { "invalid database URL: \(reason)" }
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String
    public var database: String
    public var tlsMode: TLSMode

    public static let defaultPort = 5432

    public init(_ text: String) throws(Invalid) {
        // Foundation's URL parser would accept and silently change much; the form is narrow enough to take apart
        // by hand, which also lets every message say which part is wrong without echoing the others.
        guard let schemeEnd = text.range(of: "://") else {
            throw Invalid(reason: "expected postgres://user:password@host:port/database")
        }
        let scheme = text[..<schemeEnd.lowerBound]
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw Invalid(reason: "the scheme must be postgres or postgresql")
        }
        let rest = text[schemeEnd.upperBound...]
        // The password may itself contain '@' when not percent-encoded: the host part follows the last one.
        guard let at = rest.lastIndex(of: "@") else {
            throw Invalid(reason: "user and password are required (postgres://user:password@host...)")
        }
        let credentials = rest[..<at]
        let location = rest[rest.index(after: at)...]
        guard let colon = credentials.firstIndex(of: ":") else {
            throw Invalid(reason: "the password is missing (postgres://user:password@host...)")
        }
        guard let username = credentials[..<colon].removingPercentEncoding, !username.isEmpty else {
            throw Invalid(reason: "the user name is empty or badly percent-encoded")
        }
        guard let password = credentials[credentials.index(after: colon)...].removingPercentEncoding else {
            throw Invalid(reason: "the password is badly percent-encoded")
        }
        guard let slash = location.firstIndex(of: "/") else {
            throw Invalid(reason: "the database name is missing (.../database)")
        }
        let (host, port) = try Self.hostAndPort(location[..<slash])
        let pathAndQuery = location[location.index(after: slash)...]
        let query = pathAndQuery.firstIndex(of: "?")
        let databaseText = pathAndQuery[..<(query ?? pathAndQuery.endIndex)]
        guard let database = databaseText.removingPercentEncoding, !database.isEmpty, !database.contains("/") else {
            throw Invalid(reason: "the database name is missing or not a single path segment")
        }
        var tlsMode = TLSMode.require
        if let query {
            for parameter in pathAndQuery[pathAndQuery.index(after: query)...].split(separator: "&") {
                let pair = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard pair.count == 2, pair[0] == "sslmode" else {
                    throw Invalid(reason: "unsupported query parameter '\(pair[0])' (only sslmode is accepted)")
                }
                guard let mode = TLSMode(rawValue: String(pair[1])) else {
                    let accepted = TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw Invalid(reason: "sslmode '\(pair[1])' is not one of \(accepted)")
                }
                tlsMode = mode
            }
        }
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tlsMode = tlsMode
    }

    private static func hostAndPort(_ location: Substring) throws(Invalid) -> (String, Int) {
        let host: Substring
        let portText: Substring?
        if location.hasPrefix("[") {
            guard let close = location.firstIndex(of: "]") else {
                throw Invalid(reason: "an IPv6 host must be closed by ']'")
            }
            host = location[location.index(after: location.startIndex)..<close]
            let afterHost = location[location.index(after: close)...]
            guard afterHost.isEmpty || afterHost.hasPrefix(":") else {
                throw Invalid(reason: "expected ':port' after the IPv6 host")
            }
            portText = afterHost.isEmpty ? nil : afterHost.dropFirst()
        } else if let colon = location.lastIndex(of: ":") {
            host = location[..<colon]
            portText = location[location.index(after: colon)...]
        } else {
            host = location
            portText = nil
        }
        guard !host.isEmpty else { throw Invalid(reason: "the host is missing") }
        guard let portText else { return (String(host), defaultPort) }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw Invalid(reason: "the port '\(portText)' is not a number from 1 to 65535")
        }
        return (String(host), port)
    }

    public var description: String {
        let hostText = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(username):[redacted]@\(hostText):\(port)/\(database)?sslmode=\(tlsMode.rawValue)"
    }

    /// The client configuration for this URL; `options` are postgres-nio's defaults unless given.
    public func clientConfiguration(
        options: PostgresClient.Configuration.Options = .init()
    ) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database,
            tls: tlsConfiguration.map { .require($0) } ?? .disable)
        configuration.options = options
        return configuration
    }

    /// Connects once, outside any pool, and runs `SELECT 1`, within `timeout`: for start-up, where an unreachable
    /// database must say why (refused, unknown host, authentication failed, TLS), while a pool only keeps
    /// requests waiting as long as it cannot connect. Throws `SharedStateError` (never with the password).
    public func checkConnection(timeout: Duration = .seconds(10), logger: Logger) async throws {
        let url = self
        try await SharedDatabase.bounded("connection check", timeout: timeout) {
            let tls: PostgresConnection.Configuration.TLS =
                try url.tlsConfiguration.map { .require(try NIOSSLContext(configuration: $0)) } ?? .disable
            let configuration = PostgresConnection.Configuration(
                host: url.host, port: url.port, username: url.username, password: url.password,
                database: url.database, tls: tls)
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            do {
                try await connection.query("SELECT 1", logger: logger)
                try await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
        }
    }

    /// nil for `disable`; the host name is checked against the certificate (`verify-full`) from the connection's
    /// host, as postgres-nio does for a host that is not an IP address.
    private var tlsConfiguration: TLSConfiguration? {
        switch tlsMode {
        case .disable:
            return nil
        case .require:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            return configuration
        case .verifyFull:
            return .makeClientConfiguration()
        }
    }
}
