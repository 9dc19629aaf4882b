import SharedState
import Testing

@Suite struct DatabaseURLTests {
    @Test func parsesEveryPart() throws {
        let url = try DatabaseURL("postgres://relay:s3cret@db.example.com:6543/leads?sslmode=verify-full")
        #expect(url.username == "relay")
        #expect(url.password == "s3cret")
        #expect(url.host == "db.example.com")
        #expect(url.port == 6543)
        #expect(url.database == "leads")
        #expect(url.tlsMode == .verifyFull)
        let configuration = url.clientConfiguration()
        #expect(configuration.host == "db.example.com")
        #expect(configuration.port == 6543)
        #expect(configuration.username == "relay")
        #expect(configuration.password == "s3cret")
        #expect(configuration.database == "leads")
    }

    @Test func defaultsToPort5432AndRequiredTLS() throws {
        let url = try DatabaseURL("postgresql://relay:pw@db/leads")
        #expect(url.port == 5432)
        #expect(url.tlsMode == .require)
    }

    @Test func decodesPercentEncodingAndTakesTheHostAfterTheLastAt() throws {
        let encoded = try DatabaseURL("postgres://re%40lay:p%2Fw%3Ad@[::1]:5433/my%20db?sslmode=disable")
        #expect(encoded.username == "re@lay")
        #expect(encoded.password == "p/w:d")
        #expect(encoded.host == "::1")
        #expect(encoded.port == 5433)
        #expect(encoded.database == "my db")
        let unencoded = try DatabaseURL("postgres://relay:p@ss@127.0.0.1:5432/leads")
        #expect(unencoded.password == "p@ss")
        #expect(unencoded.host == "127.0.0.1")
    }

    @Test func descriptionRedactsThePassword() throws {
        let url = try DatabaseURL("postgres://relay:hunter2-secret@db:5432/leads?sslmode=disable")
        #expect(url.description == "postgres://relay:[redacted]@db:5432/leads?sslmode=disable")
        #expect(!"\(url)".contains("hunter2"))
    }

    @Test(arguments: [
        ("mysql://relay:hunter2-secret@db:5432/leads", "scheme"),
        ("postgres://db:5432/leads", "user and password"),
        ("postgres://relay@db:5432/leads", "password is missing"),
        ("postgres://:hunter2-secret@db:5432/leads", "user name"),
        ("postgres://relay:hunter2-secret@db:5432", "database name is missing"),
        ("postgres://relay:hunter2-secret@db:5432/", "database name"),
        ("postgres://relay:hunter2-secret@:5432/leads", "host is missing"),
        ("postgres://relay:hunter2-secret@db:99999/leads", "port"),
        ("postgres://relay:hunter2-secret@db:port/leads", "port"),
        ("postgres://relay:hunter2-secret@db:5432/leads?sslmode=prefer", "sslmode 'prefer'"),
        ("postgres://relay:hunter2-secret@db:5432/leads?application_name=x", "unsupported query parameter"),
        ("postgres://relay:hunter2-secret%zz@db:5432/leads", "percent-encoded"),
        ("relay:hunter2-secret@db:5432/leads", "expected postgres://"),
    ])
    func aBadURLSaysWhatIsWrongWithoutThePassword(url: String, expected: String) {
        let error = #expect(throws: DatabaseURL.Invalid.self) { try DatabaseURL(url) }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains(expected), "\(message)")
        #expect(!message.contains("hunter2"))
    }
}
