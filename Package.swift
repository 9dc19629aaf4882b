// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "lead-relay",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lead-relay", targets: ["lead-relay"]),
        .executable(name: "seeker-leads-sim", targets: ["seeker-leads-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-openapi-generator.git", from: "1.14.3"),
        .package(url: "https://github.com/apple/swift-openapi-runtime.git", from: "1.13.4"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird.git", from: "2.1.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        // mallopt, for the executable to cap glibc's malloc arenas.
        .systemLibrary(name: "CGlibcMalloc"),
        // What the modules below share and none owns: JSON string escaping, Duration conversions, back-off.
        .target(name: "RelayPrimitives"),
        .target(
            name: "Kafka",
            dependencies: [
                "CRdKafka",
                // Duration.timeInterval, once KafkaConsumer.swift drops its own copy of it.
                "RelayPrimitives",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "LeadEvents",
            dependencies: [
                "RelayPrimitives",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "SeekerLeads",
            dependencies: [
                "RelayPrimitives",
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]
        ),
        .target(
            name: "SeekerLeadsSimulator",
            dependencies: [
                "LeadEvents",
                "RelayPrimitives",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]
        ),
        // The dedupe memory and the API budget shared by every relay through PostgreSQL; below the relay core, so
        // it depends on none of the relay's modules.
        .target(
            name: "SharedState",
            dependencies: [
                // withTimeout, a bound that does not wait for an operation ignoring its cancellation.
                "RelayPrimitives",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .target(
            name: "LeadRelay",
            dependencies: [
                "Kafka",
                "LeadEvents",
                "RelayPrimitives",
                "SeekerLeads",
                "SharedState",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                // SHA-256, naming a dead-letter replay's progress group after its filters.
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "LeadRelayDemo",
            dependencies: [
                "Kafka",
                "LeadRelay",
                "SeekerLeadsSimulator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "lead-relay",
            dependencies: [
                "CGlibcMalloc",
                "Kafka",
                "LeadEvents",
                "LeadRelay",
                "LeadRelayDemo",
                "SharedState",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // `lead-relay status` reads a relay's GET /status.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "seeker-leads-sim",
            dependencies: [
                "SeekerLeadsSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Helpers every test target wrote for itself: waiting for a condition, child processes, locked values; its
        // PostgreSQL server also serves the relay bench.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(
            name: "KafkaTests",
            dependencies: ["Kafka", "TestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "LeadEventsTests",
            dependencies: ["LeadEvents", "TestSupport"],
            // The scripts run from the source tree (the conformance check and the corpus generator).
            exclude: ["conformance.py", "make_fixtures.py"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "SeekerLeadsTests",
            dependencies: [
                "RelayPrimitives",
                "SeekerLeads",
                "SeekerLeadsSimulator",
                "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "LeadRelayTests",
            dependencies: [
                "Kafka",
                "LeadEvents",
                "LeadRelay",
                "LeadRelayDemo",
                "RelayPrimitives",
                "SeekerLeads",
                "SeekerLeadsSimulator",
                "SharedState",
                "TestSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SharedStateTests",
            dependencies: [
                "SharedState",
                "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
    ]
)

// Built only on demand, so `swift build` and `make test` never pay for them:
// `make fuzz` sets LEAD_RELAY_FUZZ (libFuzzer, in its own scratch path), `make bench` sets LEAD_RELAY_BENCH.
// Only LeadEvents and the fuzz target are instrumented: flags given to every module would also reach the
// build tools of the OpenAPI plugin, which cannot link against libFuzzer.
if Context.environment["LEAD_RELAY_FUZZ"] != nil {
    let fuzzFlags = ["-sanitize=fuzzer,address"]
    for target in package.targets where target.name == "LeadEvents" {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(fuzzFlags)]
    }
    package.targets.append(
        .executableTarget(
            name: "lead-events-fuzz",
            dependencies: ["LeadEvents"],
            path: "Fuzz/LeadEventsFuzz",
            swiftSettings: [.unsafeFlags(fuzzFlags + ["-parse-as-library"])],
            linkerSettings: [.unsafeFlags(fuzzFlags)]
        )
    )
}
if Context.environment["LEAD_RELAY_BENCH"] != nil {
    package.targets.append(
        .executableTarget(name: "lead-events-bench", dependencies: ["LeadEvents"], path: "Benchmarks/LeadEventsBench")
    )
    package.targets.append(
        .executableTarget(
            name: "lead-relay-bench",
            dependencies: [
                "Kafka", "LeadEvents", "LeadRelay", "LeadRelayDemo", "TestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/RelayBench"
        )
    )
}
