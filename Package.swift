// swift-tools-version:6.0
import PackageDescription

/// Numeric kernels are compiled with -Ounchecked in release builds: they do their own bounds reasoning
/// and are checked against naive twins in the tests (debug builds keep every check).
let fastMath: [SwiftSetting] = [
  .unsafeFlags(["-Ounchecked", "-wmo", "-target-cpu", "haswell"], .when(configuration: .release))
]

/// Code with hot loops that keeps every check (it parses what peers send): AVX2 codegen in release builds only.
let vectorCode: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release))]

let package = Package(
  name: "Agora",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "agora", targets: ["agora"]),
    .library(name: "AgoraModel", targets: ["AgoraModel"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
  ],
  targets: [
    // MARK: - System library shims (C only here; each has a README saying why)
    .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
    .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
    .systemLibrary(name: "CSodium", path: "Sources/CSodium", providers: [.apt(["libsodium-dev"])]),
    .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ", providers: [.apt(["libzmq3-dev"])]),
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(name: "CIntrinsics", path: "Sources/CIntrinsics"),
    .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
    .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),

    // MARK: - Libraries, layer by layer (each depends only on the layers below; README draws them)
    // Layer 0: text encodings every layer shares (hex, JSON strings, printable text); no dependencies.
    .target(name: "AgoraText"),
    // Layer 1: formats, numbers, digests, files.
    .target(name: "AgoraWire", dependencies: ["AgoraText"]),
    .target(name: "AgoraTensor", dependencies: ["COpenBLAS", "CDNNL"], swiftSettings: fastMath),
    // BLAKE3 kernels for AVX-512 (16 lanes) and AVX2 (8 lanes); AgoraDigest calls them after a CPU check.
    .target(name: "AgoraDigestAVX512", dependencies: ["CIntrinsics"],
            swiftSettings: fastMath + [.unsafeFlags(["-Xcc", "-mavx512f"])]),
    .target(name: "AgoraDigestAVX2", dependencies: ["CIntrinsics"],
            swiftSettings: fastMath + [.unsafeFlags(["-Xcc", "-mavx2"])]),
    .target(name: "AgoraDigest", dependencies: ["CIntrinsics", "AgoraDigestAVX512", "AgoraDigestAVX2"], swiftSettings: fastMath),
    .target(name: "AgoraStorage"),
    // Layer 2: keys and envelopes; the model and its tokenizer.
    .target(name: "AgoraCrypto", dependencies: ["CSodium", "COpenSSL", "AgoraDigest", "AgoraWire", "AgoraStorage"], swiftSettings: vectorCode),
    .target(name: "AgoraModel", dependencies: ["AgoraTensor", "AgoraText", "AgoraStorage"], swiftSettings: fastMath),
    // Layer 3: a Hugging Face checkpoint brought into Agora's layout (GPT-2, LLaMA; fp32, fp16, bf16; sharded) ...
    .target(name: "AgoraImport", dependencies: ["AgoraModel", "AgoraTensor", "AgoraDigest", "AgoraStorage", "AgoraText"]),
    // ... and text generation from any version (key/value cache, sampling, stop strings, streaming).
    .target(name: "AgoraGeneration", dependencies: ["AgoraModel", "AgoraTensor"], swiftSettings: fastMath),
    // Secure aggregation: Shamir shares, pairwise and self masks, fixed-point vectors in Z/2^b (no transport).
    .target(name: "AgoraSecureAggregation", dependencies: ["AgoraCrypto", "AgoraWire"], swiftSettings: vectorCode),
    // Layer 3: tokenized text, the network, the registry.
    .target(name: "AgoraData", dependencies: ["AgoraModel", "AgoraTensor", "AgoraStorage", "AgoraText", "AgoraWire", "CZlib"]),
    // Layer 3: fine-tuning's formats: chat templates (ChatML, Llama 3) rendered with answer masks, JSONL conversations, peft adapter directories.
    .target(name: "AgoraFineTune", dependencies: ["AgoraModel", "AgoraTensor", "AgoraStorage", "AgoraText", "AgoraWire"]),
    .target(name: "AgoraTransport", dependencies: ["CZeroMQ", "CMalloc", "AgoraWire", "AgoraCrypto", "AgoraStorage",
                                                   .product(name: "TOMLKit", package: "TOMLKit")]),
    // Layer 3: what the AI Act asks of a released model: institutions' signed declarations of their training data
    // and the public summary of training content (the EU AI Office's template) compiled from them.
    .target(name: "AgoraDisclosure", dependencies: ["AgoraCrypto", "AgoraWire", "AgoraText", .product(name: "TOMLKit", package: "TOMLKit")]),
    .target(name: "AgoraRegistry", dependencies: ["AgoraCrypto", "AgoraWire", "AgoraStorage", .product(name: "GRDB", package: "GRDB.swift")]),
    // Layer 4: the trainer.
    .target(name: "AgoraTrainer", dependencies: ["AgoraModel", "AgoraData", "AgoraFineTune", "AgoraTensor", "AgoraStorage"]),
    // A node spanning an MPI cluster: ranks, all-reduce, broadcast (Open MPI).
    .target(name: "AgoraCluster", dependencies: ["CMPI"]),
    // Layer 5: federated rounds. What coordinator, node and simulation share (the federation's settings, the
    // update and patch formats, the outer optimizer, secure encoding, public shards, a node's version copy) ...
    .target(name: "AgoraRounds", dependencies: ["AgoraDisclosure", "AgoraImport", "AgoraFineTune", "AgoraText", "AgoraTrainer", "AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraTensor", "AgoraModel", "AgoraData",
                                                "AgoraRegistry", "AgoraStorage", "AgoraSecureAggregation",
                                                .product(name: "TOMLKit", package: "TOMLKit")]),
    // Layer 6: ... and the three that run rounds: the coordinator service, the node service, the simulation.
    .target(name: "AgoraCoordinator", dependencies: ["AgoraDisclosure", "AgoraImport", "AgoraFineTune", "AgoraRounds", "AgoraTrainer", "AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraTensor", "AgoraModel",
                                                     "AgoraData", "AgoraRegistry", "AgoraStorage", "AgoraSecureAggregation", "AgoraText"]),
    .target(name: "AgoraNode", dependencies: ["AgoraDisclosure", "AgoraText", "AgoraFineTune", "AgoraRounds", "AgoraTrainer", "AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraTensor", "AgoraModel",
                                              "AgoraData", "AgoraStorage", "AgoraSecureAggregation", "AgoraCluster",
                                              .product(name: "Logging", package: "swift-log")]),
    .target(name: "AgoraSimulation", dependencies: ["AgoraRounds", "AgoraTrainer", "AgoraTransport", "AgoraCrypto", "AgoraTensor", "AgoraModel",
                                                    "AgoraData", "AgoraSecureAggregation"]),
    // Wide-area links between network namespaces, emulated in user space (scripts/wan, the wide-area tests).
    .target(name: "AgoraLinkEmulator"),
    // Layer 7: the dashboard, which observes a coordinator.
    .target(name: "AgoraDashboard", dependencies: ["AgoraDisclosure", "AgoraGeneration", "AgoraCoordinator", "AgoraRounds", "AgoraRegistry", "AgoraWire", .product(name: "Hummingbird", package: "hummingbird"),
                                                   .product(name: "Prometheus", package: "swift-prometheus")]),

    // Layer 8: a coordinator process's and a node process's services in one ServiceGroup (graceful shutdown
    // on SIGTERM/SIGINT): the rounds, the vocabulary phase, the dashboard.
    .target(name: "AgoraServices", dependencies: ["AgoraCoordinator", "AgoraDashboard", "AgoraNode", "AgoraRounds", "AgoraTransport", "AgoraCluster", "AgoraText",
                                                  .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                  .product(name: "Logging", package: "swift-log")]),

    // Layer 7: benchmark harnesses (coordinator, transport, secure aggregation) and the processes they start
    // (instant nodes, the transport's receivers), as libraries the CLI calls.
    .target(name: "AgoraBench", dependencies: ["AgoraRounds", "AgoraNode", "AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraModel", "AgoraData",
                                               "AgoraDigest", "AgoraSecureAggregation", "AgoraLinkEmulator", "AgoraGeneration", "AgoraImport", "AgoraTensor",
                                               "AgoraCoordinator", "AgoraRegistry"]),

    // MARK: - The command-line tool: a thin layer over the libraries
    .executableTarget(
      name: "agora",
      dependencies: [
        "AgoraDisclosure", "AgoraModel", "AgoraData", "AgoraTrainer", "AgoraWire", "AgoraCrypto", "AgoraDigest", "AgoraRounds", "AgoraCoordinator", "AgoraNode", "AgoraSimulation", "AgoraTransport", "AgoraTensor", "AgoraRegistry",
        "AgoraStorage", "AgoraDashboard", "AgoraBench", "AgoraImport", "AgoraGeneration", "AgoraFineTune", "AgoraText", "AgoraServices",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), "AgoraSecureAggregation", "AgoraLinkEmulator", "AgoraCluster", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]),

    // MARK: - Tests: one target per library, and what they share
    // What every test target may use (temporary directories, the demo slice, a server loop) ...
    .target(name: "AgoraTestSupport", dependencies: ["AgoraTransport", "AgoraData"], path: "Tests/AgoraTestSupport"),
    // ... and a whole federation of `agora` processes in a temporary directory, for the tests that need one.
    .target(name: "AgoraHarness", dependencies: ["AgoraTestSupport", "AgoraRounds", "AgoraTransport", "AgoraCrypto", "AgoraModel", "AgoraData", "AgoraWire"],
            path: "Tests/AgoraHarness"),
    .testTarget(name: "AgoraWireTests", dependencies: ["AgoraWire", "AgoraCrypto"]),  // the message vectors are listed in AgoraCrypto's ProtocolVectors
    .testTarget(name: "AgoraTensorTests", dependencies: ["AgoraTensor"]),
    .testTarget(name: "AgoraSecureAggregationTests", dependencies: ["AgoraSecureAggregation", "AgoraCrypto", "AgoraWire"]),
    .testTarget(name: "AgoraDigestTests", dependencies: ["AgoraDigest", "AgoraCrypto", "AgoraWire"]),
    .testTarget(name: "AgoraStorageTests", dependencies: ["AgoraStorage", "AgoraTestSupport"]),
    .testTarget(name: "AgoraCryptoTests", dependencies: ["AgoraCrypto", "AgoraWire", "AgoraTestSupport", "CSodium"]),
    .testTarget(name: "AgoraModelTests", dependencies: ["AgoraModel", "AgoraFineTune", "AgoraTensor", "AgoraTestSupport"]),
    .testTarget(name: "AgoraGenerationTests", dependencies: ["AgoraGeneration", "AgoraImport", "AgoraFineTune", "AgoraModel", "AgoraTensor", "AgoraTestSupport"]),
    .testTarget(name: "AgoraTrainerTests", dependencies: ["AgoraTrainer", "AgoraModel", "AgoraData", "AgoraFineTune", "AgoraTensor", "AgoraTestSupport"]),
    .testTarget(name: "AgoraTransportTests", dependencies: ["AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraTestSupport", "CZeroMQ"]),
    .testTarget(name: "AgoraRegistryTests", dependencies: ["AgoraRegistry", "AgoraWire", "AgoraTestSupport"]),
    .testTarget(name: "AgoraDisclosureTests", dependencies: ["AgoraDisclosure", "AgoraCrypto", "AgoraText", "AgoraTestSupport"]),
    .testTarget(name: "AgoraFederationTests", dependencies: ["AgoraHarness", "AgoraRounds", "AgoraCoordinator", "AgoraNode", "AgoraSimulation", "AgoraTensor", "AgoraModel", "AgoraCrypto", "AgoraTransport", "AgoraWire",
                                                             "AgoraData", "AgoraFineTune", "AgoraRegistry", "AgoraStorage", "AgoraTestSupport", "AgoraSecureAggregation"]),
    .testTarget(name: "AgoraDashboardTests", dependencies: ["AgoraHarness", "AgoraDashboard", "AgoraCoordinator", "AgoraRounds", "AgoraRegistry", "AgoraTestSupport",
                                                         .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdTesting", package: "hummingbird")]),
    .testTarget(name: "AgoraCLITests", dependencies: ["AgoraServices", "AgoraDisclosure", "AgoraCrypto", "AgoraWire", "AgoraHarness", "AgoraRegistry", "AgoraRounds", "AgoraData", "AgoraFineTune", "AgoraModel", "AgoraTensor", "AgoraTestSupport"]),
  ],
  swiftLanguageModes: [.v5]
)
