// swift-tools-version:6.0
import PackageDescription

/// Numeric kernels are compiled with -Ounchecked in release builds: they do their own bounds reasoning
/// and are checked against naive twins in the tests (debug builds keep every check).
let fastMath: [SwiftSetting] = [
  .unsafeFlags(["-Ounchecked", "-wmo", "-target-cpu", "haswell"], .when(configuration: .release))
]

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
  ],
  targets: [
    // MARK: - System library shims (C only here; each has a README saying why)
    .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
    .systemLibrary(name: "CSodium", path: "Sources/CSodium", providers: [.apt(["libsodium-dev"])]),
    .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ", providers: [.apt(["libzmq3-dev"])]),
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(name: "CIntrinsics", path: "Sources/CIntrinsics"),
    .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),

    // MARK: - Libraries
    .target(name: "AgoraTensor", dependencies: ["COpenBLAS"], swiftSettings: fastMath),
    .target(name: "AgoraModel", dependencies: ["AgoraTensor", "AgoraWire"], swiftSettings: fastMath),
    .target(name: "AgoraData", dependencies: ["AgoraModel", "CZlib"]),
    .target(name: "AgoraTrainer", dependencies: ["AgoraModel", "AgoraData"]),
    .target(name: "AgoraWire"),
    .target(name: "AgoraFederation", dependencies: ["AgoraTrainer", "AgoraTransport", "AgoraCrypto", "AgoraWire", "AgoraTensor", "AgoraRegistry", "AgoraDashboard",
                                                    .product(name: "Hummingbird", package: "hummingbird"),
                                                    .product(name: "Logging", package: "swift-log"),
                                                    .product(name: "TOMLKit", package: "TOMLKit")]),
    // The SHA extensions' instructions need the "sha" target feature (used only behind a CPUID check).
    // Only the BLAKE3 kernels are built for AVX-512 (16 lanes) and AVX2 (8 lanes); AgoraDigest calls them
    // after a CPU check.
    .target(name: "AgoraDigestAVX512", dependencies: ["CIntrinsics"],
            swiftSettings: fastMath + [.unsafeFlags(["-Xcc", "-mavx512f"])]),
    .target(name: "AgoraDigestAVX2", dependencies: ["CIntrinsics"],
            swiftSettings: fastMath + [.unsafeFlags(["-Xcc", "-mavx2"])]),
    .target(name: "AgoraDigest", dependencies: ["CIntrinsics", "AgoraDigestAVX512", "AgoraDigestAVX2"], swiftSettings: fastMath),
    .target(name: "AgoraCrypto", dependencies: ["CSodium", "COpenSSL", "AgoraDigest", "AgoraWire", .product(name: "TOMLKit", package: "TOMLKit")]),
    .target(name: "AgoraTransport", dependencies: ["CZeroMQ", "CMalloc", "AgoraWire", "AgoraCrypto"]),
    .target(name: "AgoraRegistry", dependencies: ["AgoraCrypto", "AgoraWire", .product(name: "GRDB", package: "GRDB.swift")]),
    .target(name: "AgoraDashboard", dependencies: ["AgoraRegistry", .product(name: "Hummingbird", package: "hummingbird"),
                                                   .product(name: "Prometheus", package: "swift-prometheus")]),

    // MARK: - The command-line tool: a thin layer over the libraries
    .executableTarget(
      name: "agora",
      dependencies: [
        "AgoraModel", "AgoraData", "AgoraTrainer", "AgoraWire", "AgoraCrypto", "AgoraDigest", "AgoraFederation", "AgoraTransport", "AgoraTensor", "AgoraRegistry",
        "AgoraDashboard", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]),

    // MARK: - Tests
    .testTarget(name: "AgoraTensorTests", dependencies: ["AgoraTensor"]),
    .testTarget(name: "AgoraModelTests", dependencies: ["AgoraModel", "AgoraData", "AgoraTrainer"]),
    .testTarget(name: "AgoraSystemTests", dependencies: ["AgoraCrypto", "AgoraTransport", "AgoraTensor", "AgoraWire", "CZeroMQ"]),
    .testTarget(name: "AgoraWireTests", dependencies: ["AgoraWire", "AgoraCrypto", "AgoraDigest", "CSodium"]),
    .testTarget(name: "AgoraDashboardTests", dependencies: ["AgoraDashboard", "AgoraRegistry",
                                                         .product(name: "HummingbirdTesting", package: "hummingbird")]),
    .testTarget(name: "AgoraFederationTests", dependencies: ["AgoraFederation", "AgoraTensor", "AgoraModel", "AgoraCrypto", "AgoraTransport", "AgoraWire", "AgoraData", "AgoraRegistry"]),
  ],
  swiftLanguageModes: [.v5]
)
