import AgoraCoordinator
import AgoraGeneration
import AgoraRegistry
import Foundation
import Hummingbird

/// "Try the model" on the dashboard (`[dashboard] try_model = true` in coordinator.toml): a completion of a
/// prompt by the latest version, streamed as it is generated. One generation at a time (another request meanwhile
/// gets 429), at most `maxNewTokens` new tokens, behind the dashboard's token like the rest of the API. The
/// generation runs on a thread of its own, never on the server's event loops.
public final class TryModel: @unchecked Sendable {
  public let store: Registry
  public let maxNewTokens: Int
  private let lock = NSLock()
  private var busy = false
  /// The latest version's generator, kept until a newer version appears.
  private var cached: (version: Int, generator: Generator)?

  public init(store: Registry, maxNewTokens: Int) {
    self.store = store
    self.maxNewTokens = maxNewTokens
  }

  /// What a page sends.
  public struct Ask: Codable, Sendable {
    public var prompt: String
    public var maxNewTokens: Int?
    public var temperature: Double?
    public var seed: UInt64?
    enum CodingKeys: String, CodingKey {
      case prompt, temperature, seed
      case maxNewTokens = "max_new_tokens"
    }
  }

  /// Takes the one generation slot; false when a generation is running.
  public func claim() -> Bool {
    lock.lock(); defer { lock.unlock() }
    if busy { return false }
    busy = true
    return true
  }

  public func release() { lock.lock(); busy = false; lock.unlock() }

  /// Generates on a thread of its own; `piece` receives the text as it comes, `done` the version and the error
  /// if any. The caller holds the slot (`claim`); it is released before `done` runs.
  public func start(_ ask: Ask, piece: @escaping @Sendable (String) -> Void, done: @escaping @Sendable (Int?, Error?) -> Void) {
    let t = Thread { [self] in
      var version: Int? = nil
      do {
        guard let latest = try store.latestVersion()?.number else { throw HTTPError(.notFound, message: "the registry holds no version yet") }
        version = latest
        let gen = try generator(latest)
        var s = GenerationSettings()
        s.maxNewTokens = min(max(1, ask.maxNewTokens ?? maxNewTokens), maxNewTokens)
        if let t = ask.temperature { s.sampling.temperature = t }
        s.sampling.seed = ask.seed ?? 0
        _ = try gen.generate(texts: [ask.prompt], s) { _, p in piece(p) }
        release()
        done(version, nil)
      } catch {
        release()
        done(version, error)
      }
    }
    t.name = "agora-try-model"
    t.start()
  }

  func generator(_ version: Int) throws -> Generator {
    if let c = cached, c.version == version { return c.generator }
    let (config, params, tok) = try VersionExport.load(version, from: store)
    let g = try Generator(config: config, parameters: params, tokenizer: tok)
    cached = (version, g)
    return g
  }

  /// `POST /api/v1/generate` with `{"prompt": …, "max_new_tokens": …, "temperature": …, "seed": …}`: the
  /// completion as text/plain, streamed; `Content-Location` names the version that writes it
  /// (`/api/v1/versions/N`).
  func route(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
    let ask = try await request.decode(as: Ask.self, context: context)
    guard ask.prompt.utf8.count <= 4096 else { throw HTTPError(.contentTooLarge, message: "a prompt of at most 4096 bytes") }
    guard claim() else { throw HTTPError(.tooManyRequests, message: "a generation is running; one at a time") }
    let version = (try? store.latestVersion()?.number).flatMap { $0 }
    let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
    start(ask, piece: { continuation.yield(ByteBuffer(string: $0)) }, done: { _, error in
      if let error { continuation.yield(ByteBuffer(string: "\n[generation failed: \(error)]")) }
      continuation.finish()
    })
    var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store"]
    if let version { headers[.contentLocation] = "/api/v1/versions/\(version)" }
    return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: stream))
  }
}
