import Foundation

/// A real PostgreSQL server for one test: its own data directory in a fresh temporary directory, listening on
/// 127.0.0.1 on a free port (its unix socket in the same directory), with one database and a password role.
///
/// Debian's server binaries are used (the newest `/usr/lib/postgresql/<version>/bin`). PostgreSQL refuses to run
/// as root, so when the tests run as root (here and in CI) every server command runs as the `postgres` user
/// through `setpriv`, which executes the command in place: the process started is the postmaster itself, so its
/// signals (SIGINT: fast shutdown) reach it directly. The directory is then owned by `postgres`.
///
/// Use `PostgresServer.with { server in ... }`, which always shuts the server down and removes its directory.
public final class PostgresServer: Sendable {
    public let port: Int
    public let user = "lead_relay"
    public let password: String
    public let database = "lead_relay"
    private let directory: URL
    private let binDirectory: URL
    private let postmaster = Locked<ServerProcess?>(nil)

    /// `postgres://user:password@127.0.0.1:port/database?sslmode=disable`.
    public var url: String {
        "postgres://\(user):\(password)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    private var dataDirectory: URL { directory.appendingPathComponent("data") }
    private var logPath: String { directory.appendingPathComponent("postgres.log").path }

    /// A server started for `body`, shut down and removed when it returns or throws.
    public static func with<Result: Sendable>(
        _ body: (PostgresServer) async throws -> Result
    ) async throws -> Result {
        let server = try await PostgresServer()
        do {
            let result = try await body(server)
            await server.tearDown()
            return result
        } catch {
            await server.tearDown()
            throw error
        }
    }

    /// Creates the data directory and the role and database, and starts the server.
    public init() async throws {
        binDirectory = try Self.findBinDirectory()
        port = try freeLoopbackPort()
        password = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lead-relay-postgres-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        do {
            if getuid() == 0 {
                try FileManager.default.setAttributes(
                    [.ownerAccountName: "postgres", .groupOwnerAccountName: "postgres"], ofItemAtPath: directory.path)
            }
            try await runServerCommand(
                "initdb",
                [
                    "-D", dataDirectory.path, "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                ])
            try await start()
            let createRole = "CREATE ROLE \(user) LOGIN PASSWORD '\(password)'"
            let createDatabase = "CREATE DATABASE \(database) OWNER \(user)"
            let psql = binDirectory.appendingPathComponent("psql")
            for statement in [createRole, createDatabase] {
                let result = try await runOffThePool(
                    psql,
                    [
                        "-h", directory.path, "-p", "\(port)", "-U", "postgres", "-d", "postgres", "-v",
                        "ON_ERROR_STOP=1", "-q", "-c", statement,
                    ])
                guard result.status == 0 else {
                    throw Failure(what: "psql (creating the role and database)", output: result.standardError)
                }
            }
        } catch {
            await tearDown()
            throw error
        }
    }

    /// Starts the server on the existing data directory and waits until it accepts connections.
    public func start() async throws {
        guard postmaster.value == nil else { return }
        let arguments = [
            "-D", dataDirectory.path, "-p", "\(port)", "-k", directory.path, "-c", "listen_addresses=127.0.0.1",
            // A test server: durability on a crash of the machine is not needed, speed is.
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]
        let process = try ServerProcess(command: serverCommand("postgres", arguments), logPath: logPath)
        postmaster.value = process
        let isReady = binDirectory.appendingPathComponent("pg_isready")
        do {
            try await waitUntil(
                "PostgreSQL on port \(port) to accept connections", timeout: .seconds(60), every: .milliseconds(50)
            ) {
                guard process.isRunning else {
                    throw Failure(what: "postgres exited at start", output: serverLog)
                }
                let probe = try await runOffThePool(isReady, ["-h", "127.0.0.1", "-p", "\(port)", "-d", "postgres"])
                return probe.status == 0
            }
        } catch {
            await stop()
            throw error
        }
    }

    /// Shuts the server down (fast: open connections are ended) and waits for it to exit; the data stays.
    public func stop() async {
        let running = postmaster.withLock { value in
            let running = value
            value = nil
            return running
        }
        guard let process = running else { return }
        process.signal(SIGINT)
        await process.waitForExit(killingAfter: .seconds(30))
    }

    /// Stops the server and removes its directory.
    public func tearDown() async {
        await stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// The server's own log, for a failure's message.
    public var serverLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        // Only for a server whose test forgot `tearDown`: no waiting here, postgres finishes its fast shutdown alone.
        postmaster.value?.signal(SIGINT)
    }

    public struct Failure: Error, CustomStringConvertible {
        public var what: String
        public var output: String
        public var description: String { "\(what):\n\(output.suffix(3000))" }
    }

    /// The newest installed version's binaries.
    private static func findBinDirectory() throws -> URL {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        let newest = versions.compactMap { name in Int(name).map { ($0, name) } }
            .filter { FileManager.default.isExecutableFile(atPath: root.path + "/\($0.1)/bin/initdb") }
            .max { $0.0 < $1.0 }
        guard let newest else {
            throw Failure(
                what: "no PostgreSQL server found", output: "expected /usr/lib/postgresql/<version>/bin/initdb")
        }
        return root.appendingPathComponent(newest.1).appendingPathComponent("bin")
    }

    /// `tool` of the server's binaries with `arguments`, as the `postgres` user when running as root.
    private func serverCommand(_ tool: String, _ arguments: [String]) -> (executable: URL, arguments: [String]) {
        let executable = binDirectory.appendingPathComponent(tool)
        guard getuid() == 0 else { return (executable, arguments) }
        return (
            URL(fileURLWithPath: "/usr/bin/setpriv"),
            ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", executable.path] + arguments
        )
    }

    private func runServerCommand(_ tool: String, _ arguments: [String]) async throws {
        let command = serverCommand(tool, arguments)
        let result = try await runOffThePool(command.executable, command.arguments, in: directory)
        guard result.status == 0 else {
            throw Failure(what: "\(tool) failed", output: result.standardOutput + result.standardError)
        }
    }
}

/// The postmaster, started as a child process with its output in a log file.
private final class ServerProcess: Sendable {
    private let process: Process
    private let exited = Locked<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(command: (executable: URL, arguments: [String]), logPath: String) throws {
        let process = Process()
        process.executableURL = command.executable
        process.arguments = command.arguments
        // The test's working directory may not be readable by the postgres user.
        process.currentDirectoryURL = URL(fileURLWithPath: logPath).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        let exited = exited
        process.terminationHandler = { _ in
            let waiters = exited.withLock { state in
                state.done = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
        self.process = process
        try process.run()
        try log.close()
    }

    var isRunning: Bool { !exited.value.done }

    func signal(_ signal: Int32) {
        guard isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit, killing it (SIGKILL) if it has not within `timeout`.
    func waitForExit(killingAfter timeout: Duration) async {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let alreadyExited = self.exited.withLock { state in
                        if !state.done { state.waiters.append(continuation) }
                        return state.done
                    }
                    if alreadyExited { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            if await group.next() == false {
                // The exit waiter ends when the killed process does.
                kill(process.processIdentifier, SIGKILL)
            }
            group.cancelAll()
        }
    }
}

/// Runs a command to its end on a thread of its own, not on the cooperative pool.
private func runOffThePool(_ executable: URL, _ arguments: [String], in directory: URL? = nil) async throws
    -> CompletedProcess
{
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(
                with: Result {
                    try CompletedProcess.run(executable, arguments: arguments, workingDirectory: directory)
                })
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on now: the kernel's choice for a socket bound to port 0. Its user
/// binds it moments later (or, in a test of an unreachable server, never).
public func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else {
        throw PostgresServer.Failure(what: "socket()", output: String(cString: strerror(errno)))
    }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
        }
    }
    guard bound else { throw PostgresServer.Failure(what: "bind()", output: String(cString: strerror(errno))) }
    return Int(UInt16(bigEndian: address.sin_port))
}
