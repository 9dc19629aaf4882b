import ArgumentParser
import AsyncHTTPClient
import Foundation
import LeadRelay

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Prints a running relay's GET /status for a person: partitions, budget, circuit, credentials.",
        discussion: "Exit status: 0 when the relay answered, 1 when it could not be reached, 2 on bad usage.")

    @Option(help: "The relay's status URL (default: http://127.0.0.1:<LEAD_RELAY_HTTP_PORT, else 8080>/status).")
    var url: String?

    @Flag(help: "Print the JSON document as the relay gave it.") var json = false

    func run() async throws {
        let port = ProcessInfo.processInfo.environment["LEAD_RELAY_HTTP_PORT"] ?? "8080"
        let target = url ?? "http://127.0.0.1:\(port)/status"
        guard let parsed = URL(string: target), parsed.scheme == "http" || parsed.scheme == "https" else {
            printError("lead-relay status: --url: not an http(s) URL: \(target)")
            throw ExitCode(2)
        }
        let body: Data
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: target), timeout: .seconds(10))
            let bytes = try await response.body.collect(upTo: 4 << 20)
            guard response.status.code == 200 else {
                printError("lead-relay status: \(target) answered HTTP \(response.status.code)")
                throw ExitCode.failure
            }
            body = Data(bytes.readableBytesView)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("lead-relay status: cannot reach \(target): \(error)")
            throw ExitCode.failure
        }
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        guard let document = try? JSONDecoder().decode(RelayStatusDocument.self, from: body) else {
            printError("lead-relay status: \(target) did not answer a relay's status document")
            throw ExitCode.failure
        }
        print(Self.text(of: document))
    }

    static func text(of status: RelayStatusDocument) -> String {
        var lines = ["lead-relay \(status.version), status at \(status.generatedAt)"]
        lines.append(status.partitions.isEmpty ? "partitions: none assigned" : "partitions:")
        for partition in status.partitions {
            let age = partition.oldestUnfinishedAgeSeconds.map { String(format: "%.1f s old", $0) }
            lines.append(
                "  \(partition.topic)[\(partition.partition)]  committed \(text(partition.committedOffset))  "
                    + "position \(text(partition.position))  lag \(text(partition.lag))  "
                    + "held \(partition.recordsHeld)  oldest unfinished "
                    + (partition.oldestUnfinishedOffset.map { "\($0) (\(age ?? "?"))" } ?? "none"))
        }
        let budget = status.budget
        var budgetLine =
            "budget (\(budget.scope)): \(budget.inFlight) in flight"
            + (budget.groupInFlight.map { " (\($0) in the group at the last grant)" } ?? "")
            + " of \(budget.maxInFlight); \(budget.startsInLastWindow) starts in the last "
            + "\(budget.windowMilliseconds) ms of \(budget.rateLimit); \(budget.callersWaiting) waiting"
        if let hold = budget.retryAfterHold {
            budgetLine += String(format: "; Retry-After hold until \(hold.until) (%.1f s left)", hold.remainingSeconds)
        }
        lines.append(budgetLine)
        let circuit = status.circuit
        lines.append(
            "circuit: \(circuit.state)"
                + (circuit.openSince.map { " since \($0)" } ?? "")
                + ", \(circuit.consecutiveFailures) consecutive failures, \(circuit.leadsWaiting) leads waiting"
                + (circuit.nextProbeInSeconds.map { String(format: ", next probe in %.1f s", $0) } ?? ""))
        let credentials = status.credentials
        lines.append(
            "credentials: \(credentials.method), \(credentials.state)"
                + (credentials.failingSince.map { " since \($0)" } ?? "")
                + (credentials.tokenExpiresAt.map { ", token expires \($0)" } ?? ""))
        let answers = status.apiAnswers.sorted { $0.key < $1.key }.map {
            "\($0.key) × \($0.value.count) (last \($0.value.lastAt))"
        }
        lines.append("API answers: " + (answers.isEmpty ? "none yet" : answers.joined(separator: ", ")))
        lines.append("configuration:")
        for (name, value) in status.configuration.sorted(by: { $0.key < $1.key }) {
            lines.append("  \(name): \(value)")
        }
        return lines.joined(separator: "\n")
    }

    private static func text(_ value: Int64?) -> String { value.map(String.init) ?? "-" }
}
