import SharedState
import TestSupport
import Testing

@Suite struct ConnectionCheckTests {
    @Test func aConnectionCheckSaysWhyTheDatabaseCannotBeUsed() async throws {
        try await PostgresServer.with { server in
            let url = try DatabaseURL(server.url)
            try await url.checkConnection(logger: quietLogger)

            var wrongPassword = url
            wrongPassword.password = "not-the-password-\(server.password)"
            let refused = await #expect(throws: SharedStateError.self) {
                try await wrongPassword.checkConnection(logger: quietLogger)
            }
            let refusal = refused.map { "\($0)" } ?? ""
            #expect(refused?.kind == .rejected)
            #expect(refusal.contains("password authentication failed"), "\(refusal)")
            #expect(!refusal.contains(server.password))

            await server.stop()
            let unreachable = await #expect(throws: SharedStateError.self) {
                try await url.checkConnection(logger: quietLogger)
            }
            let outage = unreachable.map { "\($0)" } ?? ""
            #expect(unreachable?.kind == .unavailable)
            #expect(outage.hasPrefix("shared state: connection check: database unavailable: "), "\(outage)")
            #expect(!outage.contains(server.password))
        }
    }
}
