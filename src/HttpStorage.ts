/**
 * The HTTP(S) storage: fetches model files from URLs into a local cache and
 * hands them over from there, by path or as bytes.
 *
 * - Streams each body to disk (memory does not grow with the file), hashing it
 *   as it arrives, into a staging file that is renamed into place only when
 *   complete and verified: the cache never holds a partial or corrupt file
 *   under a final name.
 * - Revalidates a cached copy with ETag / Last-Modified (a 304 reuses it).
 * - Resumes a partial download with Range + If-Range, in the same run (after
 *   a dropped connection) and in a later one (after a killed process); a
 *   server that ignores Range is handled (it starts over).
 * - Retries what is transient (connection errors, timeouts, stalls, 408, 429
 *   with its Retry-After, 5xx) with a Schedule the caller can replace; 401,
 *   403, 404 fail at once.
 * - One fetch per file at a time, across fibers and processes (a lock file
 *   per cache entry with a heartbeat; a lock whose holder stopped beating is
 *   taken over; waiting is logged and bounded by `lock_timeout`).
 * - A resumed download continues the same version only (validator and total
 *   size checked on the 206); a cached copy is re-hashed when it changed on
 *   disk; free space is checked before a download; files and folders are
 *   flushed (fsync) before and after each rename.
 * - Offline mode: the cache only.
 *
 * @since 0.2.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Schema from "effect/Schema"
import * as cache from "./internal/cache.js"
import * as declare_ from "./internal/declare.js"
import * as errors from "./internal/errors.js"
import * as http from "./internal/http.js"
import * as network_ from "./internal/network.js"
import * as options_ from "./internal/options.js"
import { Seconds, Secret } from "./internal/options.js"
import * as read_ from "./internal/read.js"
import * as unpacking from "./internal/unpacking.js"
import * as snapshot from "./internal/snapshot.js"
import * as internal from "./internal/storage.js"
import * as transfer from "./internal/transfer.js"
import * as LoadedFile from "./LoadedFile.js"
import * as StorageError from "./StorageError.js"

/**
 * @since 0.2.0
 * @category constants
 */
export const storageType = "http"

const Url = Schema.String.pipe(
  Schema.filter((value) => {
    try {
      const url = new URL(value)
      return url.protocol === "http:" || url.protocol === "https:" ? true : "must be an http:// or https:// URL"
    } catch {
      return "is not a valid URL"
    }
  })
)

const Sha256 = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]{64}$/, { message: () => "must be a sha256 digest: 64 hexadecimal digits" })
)

/**
 * How a cached file is re-checked: `"changed"` (re-hashed when its identity on
 * disk changed since it was verified) or `"always"` (on every load).
 *
 * @since 0.4.0
 * @category schemas
 */
export const Verify = options_.Verify

const MiB = 1024 * 1024

/**
 * `storage_kwargs` of the HTTP storage. Unknown keys are rejected.
 *
 * - `urls` (required): one URL or a list; files are delivered in this order.
 * - `headers`: sent with every request (`Authorization`, …); the values are
 *   secrets (Redacted: never printed or logged). Dropped on a redirect to
 *   another origin.
 * - `sha256`: the expected digest: one string for a single URL, or a map from
 *   URL (or file name) to digest.
 * - `need_load_file` (false): hand over the cached file's path, or its bytes.
 * - `cache` (true): `false`, with `need_load_file: true`, reads each file
 *   straight into one buffer of its size (parallel ranged reads, verified as
 *   they land), with nothing on disk; see docs/memory.md.
 * - `cache_dir`: default `$MLUP_STORAGE_CACHE`, else `~/.cache/mlup-storage`.
 * - `connect_timeout` (30 s): until the response headers arrive;
 *   `stall_timeout` (60 s): the longest wait for the next bytes of a body.
 * - `retries` (5): retries of transient failures, exponential from 250 ms
 *   with jitter; `max_retry_after` (60 s): the longest Retry-After honoured
 *   (a longer one fails at once rather than wait in silence).
 * - `offline` (false): use the cache only.
 * - `concurrency` (8): files fetched at once (as `curl -Z` and huggingface_hub do).
 * - `multipart_threshold_mb` (64), `part_size_mb` (16), `part_concurrency`
 *   (8): a file at least this large, from a server that accepts ranges and
 *   names the version (a strong ETag or Last-Modified), is fetched as parallel
 *   ranged GETs (each checked against that version with If-Range), as aria2c
 *   does: servers and CDNs that cap each connection's speed then give the
 *   sum. Each finished part is flushed and recorded, so an interrupted
 *   download resumes the missing parts. `part_concurrency: 1` turns it off.
 * - `lock_timeout` (1800 s): the longest wait for another process (or fiber)
 *   that is fetching the same URL and whose heartbeat says it is alive; then
 *   `LockTimeout`. A holder that died is taken over at once (see the docs).
 * - `verify` (`"changed"`): a cached file is re-hashed when its identity on
 *   disk (size, mtime, inode, ctime) changed since it was verified; `"always"`
 *   re-hashes it on every load. A copy that no longer matches is fetched
 *   again (offline: `ChecksumMismatch`), never delivered.
 *
 * - `ca_bundle`: a PEM file of certificate authorities trusted besides Node's
 *   own (a company's proxy or CA); `SSL_CERT_FILE` and `AWS_CA_BUNDLE` are
 *   read too. Proxies come from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`.
 *   Both need the Node wiring (`NodeStorage`).
 *
 * Two URLs delivered under the same file name are invalid (name both).
 *
 * @since 0.2.0
 * @category schemas
 */
export const Kwargs = Schema.Struct({
  urls: Schema.Union(Url, Schema.Array(Url).pipe(Schema.minItems(1, { message: () => "must list at least one URL" }))).annotations({
    missingMessage: () => "is missing: give the URL of the model file, or a list of URLs"
  }),
  headers: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Secret }), { default: () => ({}) }),
  sha256: Schema.optionalWith(Schema.Union(Sha256, Schema.Record({ key: Schema.String, value: Sha256 })), {
    exact: true
  }),
  connect_timeout: Seconds(30),
  max_retry_after: Seconds(60),
  ...options_.transferFields
}).pipe(Schema.filter((kwargs) => {
  // Files are delivered by name (into --to, say): two URLs must not share one.
  const urls: ReadonlyArray<string> = typeof kwargs.urls === "string" ? [kwargs.urls] : kwargs.urls
  const seen = new Map<string, string>()
  for (const url of urls) {
    const name = http.nameOf(url)
    const other = seen.get(name)
    if (other !== undefined) {
      return {
        path: ["urls"],
        message: other === url
          ? `lists ${errors.redactUrl(url)} twice`
          : `has two URLs delivered under the same name ${name}: ${errors.redactUrl(other)} and ${
            errors.redactUrl(url)
          } (rename one on the server, or load them with two storages)`
      }
    }
    seen.set(name, url)
  }
  return true
}))

/**
 * The HTTP storage's kwargs, decoded: its URLs, headers and digests besides the options every remote storage takes.
 *
 * @since 0.2.0
 * @category models
 */
export type Kwargs = typeof Kwargs.Type

/**
 * What only code can give the HTTP storage: a retry Schedule.
 *
 * @since 0.5.0
 * @category models
 */
export interface Extra extends declare_.WithRetrySchedule {
}

/**
 * The options in code (`urls`, `sha256`, `partSizeMb`, …): the kwargs' camelCase twins, with
 * Durations for timeouts and `Extra` besides; one schema decodes both.
 *
 * @since 0.2.0
 * @category models
 */
export type Options = declare_.OptionsOf<typeof Kwargs.Encoded> & Extra

const invalid = (field: string, problem: string) =>
  new StorageError.InvalidStorageOptions({
    storageType,
    issues: [new StorageError.OptionIssue({ field, problem })]
  })

/**
 * An HTTP storage from decoded kwargs (and, from code, a retry Schedule).
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeResolved = (
  kwargs: Kwargs,
  retrySchedule?: Schedule.Schedule<unknown, unknown>
): Effect.Effect<
  internal.Service,
  StorageError.InvalidStorageOptions,
  HttpClient.HttpClient | FileSystem.FileSystem | Path.Path
> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const client = yield* HttpClient.HttpClient
    const urls: ReadonlyArray<string> = typeof kwargs.urls === "string" ? [kwargs.urls] : kwargs.urls
    const conflicts = options_.deliveryConflicts(kwargs)
    if (conflicts.length > 0) return yield* new StorageError.InvalidStorageOptions({ storageType, issues: conflicts })

    // The expected digest of each URL; every key of a map must name one of them.
    const expected = new Map<string, string>()
    if (typeof kwargs.sha256 === "string") {
      if (urls.length > 1) {
        return yield* invalid("sha256", "is one digest for several URLs: give a map from URL (or file name) to digest")
      }
      expected.set(urls[0]!, kwargs.sha256.toLowerCase())
    } else if (kwargs.sha256 !== undefined) {
      for (const [key, digest] of Object.entries(kwargs.sha256)) {
        const matching = urls.filter((url) => url === key || http.nameOf(url) === key)
        if (matching.length === 0) {
          return yield* invalid(`sha256.${errors.redactUrl(key)}`, "names none of the URLs (give a URL or the file name of one)")
        }
        for (const url of matching) expected.set(url, digest.toLowerCase())
      }
    }

    const options: http.FetchOptions = {
      cacheDir: path.resolve(kwargs.cache_dir ?? (yield* cache.defaultCacheDir(path))),
      headers: kwargs.headers,
      connectTimeout: Duration.seconds(kwargs.connect_timeout),
      stallTimeout: Duration.seconds(kwargs.stall_timeout),
      schedule: retrySchedule ?? transfer.defaultSchedule(kwargs.retries),
      maxRetryAfter: Duration.seconds(kwargs.max_retry_after),
      offline: kwargs.offline ?? false,
      lockTimeout: Duration.seconds(kwargs.lock_timeout),
      verify: kwargs.verify,
      multipartThreshold: kwargs.multipart_threshold_mb * MiB,
      partSize: kwargs.part_size_mb * MiB,
      partConcurrency: kwargs.part_concurrency,
      unpacker: yield* unpacking.unpackerOf(kwargs)
    }
    const readBytes = read_.readBytes(fs, path)

    // On Node, each load's requests go through node:http agents with the
    // environment's proxies and CAs (and ca_bundle's); elsewhere, through the
    // platform's client.
    const network = yield* Effect.serviceOption(network_.Network)
    const extraCa = yield* network_.caBundleOf(kwargs.ca_bundle, storageType)
    if (Option.isNone(network) && kwargs.ca_bundle !== undefined) {
      return yield* invalid("ca_bundle", "needs the Node wiring (NodeStorage's layers), which this platform does not have")
    }
    const sendForLoad: Effect.Effect<network_.Send, StorageError.InvalidStorageOptions, Scope.Scope> = Option.match(
      network,
      {
        onNone: () => Effect.succeed(http.platformSend(client)),
        onSome: (network) => network.client(storageType, extraCa)
      }
    )

    const fetchOne = (url: string, tracker: transfer.Tracker, send: network_.Send) =>
      http.fetch(url, expected.get(url), options, tracker, send)
    // Archives (with `unpack`) become their files: every one of them (this storage has no mask).
    const unpack = unpacking.stage(options.unpacker, storageType, { mask: undefined, maskField: "unpack" })
    const deliverFiles = read_.deliverAll(fs, path, kwargs.need_load_file)
    const deliver = (files: ReadonlyArray<unpacking.Delivered>) => Effect.flatMap(unpack(files), deliverFiles)

    // The services are provided once per load, not once per file (thousands of files).
    const withServices = <A, E>(self: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | Scope.Scope>) =>
      self.pipe(
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.provideService(Path.Path, path)
      )

    // With the cache off, the URLs are a source of the transfer engine, which reads them straight into memory.
    const inMemory = (urls: ReadonlyArray<string>) =>
      snapshot.make(
        http.source({
          urls,
          expected,
          headers: kwargs.headers,
          connectTimeout: options.connectTimeout,
          concurrency: kwargs.concurrency,
          connect: sendForLoad
        }),
        { ...options, concurrency: kwargs.concurrency }
      ).pipe(
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.provideService(Path.Path, path)
      )

    const load = kwargs.cache
      ? Effect.flatMap(Effect.zip(transfer.makeTracker, sendForLoad), ([tracker, send]) =>
        Effect.forEach(urls, (url) => fetchOne(url, tracker, send), { concurrency: kwargs.concurrency }).pipe(
          withServices,
          // A load that fails leaves nothing unpacked for it behind (archives followed as they arrived).
          Effect.onError(() => options.unpacker?.discardPending ?? Effect.void),
          Effect.flatMap(deliver)
        ))
      : Effect.flatMap(inMemory(urls), (work) => work.loadBytes)

    const deliverLocal = (file: string) =>
      Effect.gen(function*() {
        const target = path.resolve(file)
        const info = yield* Effect.mapError(fs.stat(target), errors.fromPlatformError(target, "stat"))
        if (info.type !== "File") {
          return yield* new StorageError.ReadFailed({ path: target, operation: "load", reason: "it is not a file" })
        }
        return kwargs.need_load_file
          ? yield* readBytes(target)
          : LoadedFile.path({ path: target, name: path.basename(target), size: Number(info.size) })
      })

    // A URL is fetched (through the cache); a local path (a file this storage
    // delivered, say) is handed over from the disk.
    const loadBytesSingleFile = (location: string) =>
      Schema.is(Url)(location) && !kwargs.cache
        ? Effect.flatMap(inMemory([location]), (one) => Effect.map(one.loadBytes, (files) => files[0]!))
        : Schema.is(Url)(location)
        ? Effect.flatMap(Effect.zip(transfer.makeTracker, sendForLoad), ([tracker, send]) =>
          Effect.map(withServices(Effect.flatMap(fetchOne(location, tracker, send), (fetched) => deliver([fetched]))), (files) => files[0]!))
        : deliverLocal(location)

    return yield* internal.make({ storageType, load, loadBytesSingleFile })
  })

/**
 * The HTTP storage, declared once; from the declaration come `make`
 * (options that do not validate: `InvalidStorageOptions`), `layer` (takes
 * `HttpClient`, `FileSystem` and `Path` from the application, so a test may
 * give its own; the cache runs on Node: node:fs, worker threads;
 * `NodeStorage.layerHttp` provides Node's), `layerConfig` (every option a
 * `Config`, `Config.succeed` for a constant; a malformed value is a
 * `ConfigError`) and `definition`, for a `Selection` registry.
 *
 * @example
 * ```ts
 * import * as Config from "effect/Config"
 * HttpStorage.layerConfig({
 *   urls: Config.string("MODEL_URL"),
 *   headers: { authorization: Config.redacted("MODEL_TOKEN") },
 *   sha256: Config.option(Config.string("MODEL_SHA256")).pipe(Config.map(Option.getOrUndefined))
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const { definition, layer, layerConfig, make }: declare_.Declared<Options, Kwargs, HttpClient.HttpClient | FileSystem.FileSystem | Path.Path> = declare_.declare(storageType, {
  aliases: ["https", "HttpStorage"],
  kwargs: Kwargs,
  extras: ["retrySchedule"],
  build: (kwargs, extra: Extra) => makeResolved(kwargs, extra.retrySchedule)
})

