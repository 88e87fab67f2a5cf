import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as network from "./network.js"
import * as nodeDrain from "./nodeDrain.js"
import * as engine from "./engine.js"
import type * as snapshot from "./snapshot.js"
import * as transfer from "./transfer.js"

/**
 * What the cache knows of a complete, verified file. Written after the file is
 * in place, removed before it is replaced: a file without it is not trusted.
 * Holds the URL's key, not the URL (which may carry credentials).
 *
 * @internal
 */
export interface Meta {
  readonly key: string
  readonly name: string
  readonly size: number
  /** The sha256 of the whole file (absent for a file fetched in parts without an expected digest). */
  readonly sha256?: string
  /** A file fetched in parts: the sha256 of each `partSize` bytes (what re-checks it). */
  readonly digests?: ReadonlyArray<string>
  readonly partSize?: number
  readonly etag?: string
  readonly lastModified?: string
  readonly fetchedAt: number
  /** The file's identity on disk when it was last verified. */
  readonly identity?: cache.Identity
}

/** @internal */
export interface FetchOptions extends Omit<engine.Settings, "concurrency" | "cache"> {
  readonly headers: Readonly<Record<string, Redacted.Redacted<string>>>
  readonly connectTimeout: Duration.Duration
}

/** @internal */
export interface Fetched {
  readonly file: string
  readonly name: string
  readonly size: number
  /** The URL, redacted: in messages. */
  readonly location: string
}

/** The file name a URL is delivered under: its last path segment. */
export const nameOf = (url: string): string => {
  const segments = new URL(url).pathname.split("/").filter((segment) => segment !== "")
  const last = segments.at(-1)
  if (last === undefined) return "index"
  try {
    return cache.safeName(decodeURIComponent(last))
  } catch {
    return cache.safeName(last)
  }
}

const maxRedirects = 10
const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const strongEtag = (etag: string | undefined): string | undefined =>
  etag !== undefined && !etag.startsWith("W/") ? etag : undefined

const parseContentRange = transfer.parseContentRange

/** The version an answer carries, of the kind a partial download was started with. */
const validatorOf = (kind: Version["kind"] | undefined, response: network.Answer) =>
  kind === "etag" ? strongEtag(response.headers["etag"]) : response.headers["last-modified"]

const statusFailure = (url: string, response: network.Answer) =>
  network.failureOf({ location: url, status: response.status, retryAfter: transfer.retryAfterOf(response.headers["retry-after"]) })

/**
 * GETs through the platform's HTTP client (platforms without the Node
 * wiring, and tests that give their own client): its answers as `Answer`s.
 *
 * @internal
 */
export const platformSend = (client: HttpClient.HttpClient): network.Send => {
  const untraced = HttpClient.withTracerDisabledWhen(client, () => true)
  return (url, headers, timeoutMillis) =>
    untraced.execute(HttpClientRequest.get(url).pipe(HttpClientRequest.setHeaders(headers))).pipe(
      Effect.map((response): network.Answer => {
        // @effect/platform-node's clients hold a Node stream: read as such.
        const readable = nodeDrain.readableOf(response)
        return {
          status: response.status,
          headers: response.headers,
          body: readable ?? Stream.toAsyncIterable(response.stream),
          consume: Effect.ignore(response.text),
          discard: readable !== undefined
            ? Effect.sync(() => void (readable.readableEnded || readable.destroy()))
            : Effect.ignore(Stream.runDrain(response.stream))
        }
      }),
      Effect.timeoutFail({
        duration: Duration.millis(timeoutMillis),
        onTimeout: (): network.RequestFailure => ({
          _tag: "Unanswered",
          reason: `no response within ${Duration.format(Duration.millis(timeoutMillis))}`
        })
      }),
      Effect.catchTags({
        RequestError: (error) =>
          Effect.fail<network.RequestFailure>(
            network.refusalOf(error.cause, "") !== undefined
              ? { _tag: "Refused", error: error.cause }
              : { _tag: "Unanswered", reason: `request failed: ${errors.redactText(String(error.cause ?? error.message))}` }
          ),
        ResponseError: (error) =>
          Effect.fail<network.RequestFailure>({
            _tag: "Unanswered",
            reason: `bad response: ${errors.redactText(String(error.cause ?? error.message))}`
          })
      })
    )
}

/**
 * Requests of one URL: the caller's headers (secrets) to the URL's own origin
 * only, conditions to every hop, redirects followed (at most 10), a response
 * expected within `connectTimeout`; transport failures are `Retryable`, a
 * certificate or a proxy that refuses is a typed error at once.
 *
 * @internal
 */
export const requester = (
  send: network.Send,
  url: string,
  options: { readonly headers: FetchOptions["headers"]; readonly connectTimeout: Duration.Duration }
) => {
  // What messages, logs and progress show: never the URL's credentials or signature.
  const location = errors.redactUrl(url)
  // Conditions go to every hop; the caller's headers (secrets) only to the URL's own origin.
  const origin = new URL(url).origin
  const secretHeaders = (target: string): Record<string, string> =>
    new URL(target).origin === origin
      ? Object.fromEntries(Object.entries(options.headers).map(([key, value]) => [key, Redacted.value(value)]))
      : {}
  const timeoutMillis = Duration.toMillis(options.connectTimeout)
  const once = (target: string, conditions: Record<string, string>) =>
    send(target, { ...secretHeaders(target), ...conditions }, timeoutMillis).pipe(
      // A certificate or a proxy that is not accepted is not accepted on a retry either.
      Effect.catchAll((failure) =>
        Effect.fail(
          failure._tag === "Refused"
            ? network.refusalOf(failure.error, location) ?? new transfer.Retryable({ reason: "request refused" })
            : new transfer.Retryable({ reason: failure.reason })
        )
      )
    )

  // One request, redirects followed.
  const request = (conditions: Record<string, string>) =>
    Effect.gen(function*() {
      let target = url
      let response = yield* once(target, conditions)
      for (let hops = 0; isRedirect(response.status) && response.headers["location"] !== undefined; hops++) {
        if (hops === maxRedirects) {
          return yield* new StorageError.RequestRejected({
            location,
            status: response.status,
            reason: `more than ${maxRedirects} redirects`
          })
        }
        yield* response.consume
        target = new URL(response.headers["location"], target).href
        response = yield* once(target, conditions)
      }
      return response
    })

  return {
    location,
    request,
    /** One hop to the URL itself (no redirect followed), its failure as the client told it. */
    ask: (conditions: Record<string, string>) => send(url, { ...secretHeaders(url), ...conditions }, timeoutMillis)
  }
}

/**
 * Fetches one URL into the cache and returns the cached file. Under the
 * entry's lock: re-checks a cached copy (re-hashed when its identity on disk
 * changed) and reuses it when the server confirms it (304); else resolves
 * the URL by its answer (size, version, ranges), checks the free space, and
 * hands the body to the transfer engine (one stream or ranged parts pinned
 * to the version with If-Range, resumed from the engine's checkpoints, a
 * 206 of another version or size never spliced); the verified, flushed
 * staging file is then renamed into place with its metadata.
 *
 * @internal
 */
export const fetch = (
  url: string,
  expectedSha256: string | undefined,
  options: FetchOptions,
  tracker: transfer.Tracker,
  send: network.Send
): Effect.Effect<Fetched, StorageError.StorageError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    // What messages, logs and progress show: never the URL's credentials or signature.
    const location = errors.redactUrl(url)
    const key = cache.keyOf(url)
    const name = nameOf(url)
    const dir = path.join(options.cacheDir, "http", key)
    const file = path.join(dir, name)
    const metaFile = path.join(dir, "meta.json")
    const partial = path.join(dir, `${name}.partial`)
    const progress = tracker.file(location, name)
    const expected = expectedSha256?.toLowerCase()

    const readMeta = Effect.gen(function*() {
      const meta = yield* cache.readJson<Meta>(metaFile)
      if (Option.isNone(meta) || meta.value.key !== key || meta.value.name !== name) return Option.none<Meta>()
      return expected === undefined || meta.value.sha256 === expected ? meta : Option.none<Meta>()
    })

    // A cached copy is delivered only when it is still what was verified:
    // re-hashed when its identity changed (or always, with verify "always").
    const recheck = (meta: Meta) =>
      cache.checkCached(
        fs,
        file,
        {
          size: meta.size,
          digests: meta.digests ?? [meta.sha256 ?? ""],
          partSize: meta.partSize ?? Math.max(1, meta.size),
          identity: meta.identity
        },
        options.verify
      ).pipe(
        Effect.tap(({ identity, rehashed }) =>
          rehashed && identity !== meta.identity
            ? Effect.ignore(cache.writeJsonAtomic(metaFile, { ...meta, identity } satisfies Meta))
            : Effect.void
        ),
        Effect.as(meta)
      )
    const corrupted = (meta: Meta, actual: string) =>
      new StorageError.ChecksumMismatch({
        location: `${location} (the cached copy in ${file})`,
        algorithm: "sha256",
        expected: meta.sha256 ?? (meta.digests ?? []).join(","),
        actual
      })

    const fromCache = (meta: Meta) =>
      Effect.as(progress.cached(meta.size), { file, name, size: meta.size, location } satisfies Fetched)

    // The conditions that ask the server whether a cached copy is still current.
    const validatorsOf = (meta: Option.Option<Meta>): Record<string, string> =>
      Option.isNone(meta)
        ? {}
        : meta.value.etag !== undefined
        ? { "if-none-match": meta.value.etag }
        : meta.value.lastModified !== undefined
        ? { "if-modified-since": meta.value.lastModified }
        : {}

    const { ask, request } = requester(send, url, options)

    if (options.offline) {
      const meta = yield* readMeta
      if (Option.isNone(meta)) {
        return yield* new StorageError.NotCached({ location, cacheDir: options.cacheDir })
      }
      const checked = yield* Effect.either(recheck(meta.value))
      if (checked._tag === "Left") {
        yield* cache.removeAll(metaFile, file)
        return yield* corrupted(meta.value, checked.left.actual)
      }
      return yield* fromCache(meta.value)
    }

    // Revalidation without the lock, the common case of a warm cache: a
    // cached copy whose identity on disk is the one it was verified with is
    // confirmed by the server (304) and delivered, in two system calls and
    // one request. Any other answer (or none) goes the locked way below,
    // which writes and reports failures: a 200 (a new version, or a server
    // that ignores conditional requests) is used there unless the lock had
    // to be waited for or the cache changed meanwhile; a redirect is followed there.
    let unlocked: { readonly response: network.Answer; readonly meta: Meta } | undefined
    if (options.verify === "changed") {
      const meta = yield* readMeta
      if (Option.isSome(meta) && meta.value.identity !== undefined && Object.keys(validatorsOf(meta)).length > 0) {
        const identity = yield* cache.identityOf(file)
        if (Option.isSome(identity) && identity.value === meta.value.identity) {
          const response = yield* Effect.option(ask({ "accept-encoding": "identity", ...validatorsOf(meta) }))
          if (Option.isSome(response)) {
            if (response.value.status === 304) {
              yield* response.value.consume
              return yield* fromCache(meta.value)
            }
            if (response.value.status === 200) unlocked = { response: response.value, meta: meta.value }
            else yield* response.value.discard
          }
        }
      }
    }

    yield* cache.ensureDir(dir)
    const waitStarted = yield* Clock.currentTimeMillis

    return yield* Effect.scoped(Effect.gen(function*() {
      // The unlocked answer is closed, whatever happens, unless it was used.
      yield* Effect.addFinalizer(() => (unlocked === undefined ? Effect.void : unlocked.response.discard))
      const { waited } = yield* cache.lock(path.join(dir, "lock"), { location, timeout: options.lockTimeout })
      let cached = yield* readMeta
      if (Option.isSome(cached)) {
        const checked = yield* Effect.either(recheck(cached.value))
        if (checked._tag === "Left") {
          yield* Effect.logWarning(
            `The cached copy of ${errors.cap(location)} (${errors.cap(file)}) changed on disk (${corrupted(cached.value, checked.left.actual).message}); fetching it again`
          )
          yield* cache.removeAll(metaFile, file)
          cached = Option.none()
        }
      }
      // Another process or fiber fetched it while this one waited: nothing to ask the server.
      if (waited && Option.isSome(cached) && cached.value.fetchedAt >= waitStarted) {
        return yield* fromCache(cached.value)
      }

      // The body goes through the transfer engine, as every remote source's:
      // one stream, or ranged parts pinned to the URL's version (If-Range,
      // then the answer's validator), checkpointed as it arrives and resumed
      // from its record, verified whole. The first answer (the URL's
      // resolution) is handed to the engine as its first read when it asks
      // for the whole file, so a small file costs one request.
      const versions = new Map<string, Version>()
      const primed = new Map<string, network.Answer>()
      yield* Effect.addFinalizer(() => Effect.forEach(primed.values(), (answer) => answer.discard, { discard: true }))
      // A server that answered a range with the whole file is not asked for ranges again.
      let rangesIgnored = false
      const work = yield* engine.make(
        reader({ ...options, versions, primed, onRangesIgnored: () => void (rangesIgnored = true) }),
        { ...options, concurrency: 1 },
        dir
      )
      const { data: partsData, record: partsRecord } = work.partialOf({ key: url })

      // A verified staging file goes into place (renamed, folder flushed; the
      // engine flushed the file). The old metadata goes first, so no moment
      // pairs a new file with old metadata.
      const complete = (
        size: number,
        /** The whole file's sha256, or (in parts, without an expected digest) its parts'. */
        verified: string | { readonly digests: ReadonlyArray<string>; readonly partSize: number },
        version: Version | undefined
      ) =>
        Effect.gen(function*() {
          yield* cache.removeAll(metaFile)
          // One flush of the folder, after both renames (the file's, then its metadata's).
          yield* cache.commit(partial, file, { syncFolder: false, flushed: true })
          const identity = yield* cache.identityOf(file)
          const meta: Meta = {
            key,
            name,
            size,
            ...(typeof verified === "string" ? { sha256: verified } : verified),
            ...(version?.kind === "etag" ? { etag: version.validator } : {}),
            ...(version?.kind === "last-modified" ? { lastModified: version.validator } : {}),
            fetchedAt: yield* Clock.currentTimeMillis,
            ...(Option.isSome(identity) ? { identity: identity.value } : {})
          }
          // Not flushed itself: a record cut short by a power loss reads as none, and the file is
          // then fetched again; the folder's flush below makes both renames durable.
          yield* cache.writeJsonAtomic(metaFile, meta, { flush: false })
          yield* cache.sync(dir)
          return { file, name, size, location } satisfies Fetched
        })

      const startOver = Effect.suspend(() => {
        const reason = rangesIgnored
          ? "the server answered a range with the whole file; starting over without ranges"
          : "the file changed on the server during the download; starting over"
        return cache.removeAll(partial, partsData, partsRecord).pipe(
          Effect.zipRight(Effect.logWarning(`${errors.cap(location)}: ${reason}`)),
          Effect.zipRight(Effect.fail(new transfer.Retryable({ reason })))
        )
      })

      // The file into the staging file, through the engine, then into place.
      const intoPlace = (entry: engine.Entry, version: Version | undefined, recorded: boolean) =>
        Effect.gen(function*() {
          if (version !== undefined) versions.set(url, version)
          else versions.delete(url)
          // Is there room for the rest? Checked before any byte is written (a partial of an older
          // version is removed first, so that its space is free for this one; so is, when room is
          // short, a staging file an earlier run left, which is never resumed).
          if (entry.unsized !== true) {
            const needed = entry.size - (recorded ? yield* work.held(entry) : 0)
            yield* cache.ensureSpace(dir, needed).pipe(
              Effect.catchTag("InsufficientSpace", () =>
                Effect.zipRight(cache.removeAll(partial), cache.ensureSpace(dir, needed)))
            )
          }
          const done = yield* work.download(send, entry, partial, tracker).pipe(
            Effect.catchAll((error): Effect.Effect<never, StorageError.StorageError | transfer.Retryable> =>
              error._tag === "ChecksumMismatch" && error.algorithm.startsWith("ETag") ? startOver : Effect.fail(error)
            )
          )
          return yield* complete(
            done.size,
            done.checked[0] ??
              (done.digests.length === 1 ? done.digests[0]! : { digests: done.digests, partSize: done.partSize }),
            version
          )
        })
      const checks: ReadonlyArray<engine.Check> = expected === undefined
        ? []
        : [{ algorithm: "sha256", expected, label: "sha256" }]

      const attempt = Effect.gen(function*() {
        // A partial download of an earlier run (killed, interrupted, failed) goes on straight from
        // its checkpoints, its reads pinned to its version (If-Range): a server that has another
        // version now answers with it, and the download starts over.
        const found = yield* cache.readJson<engine.PartsRecord>(partsRecord)
        const record = Option.filter(found, (record) => record.key === url && record.etag !== "" && !rangesIgnored)
        if (Option.isSome(record)) {
          if (unlocked !== undefined) yield* unlocked.response.discard
          unlocked = undefined
          const { etag, size } = record.value
          return yield* intoPlace(
            { key: url, name, size, etag, ranged: true, checks },
            { kind: etag.startsWith("\"") ? "etag" : "last-modified", validator: etag },
            true
          )
        }
        // Else the URL is resolved by its answer to a GET, conditional on the cached copy.
        const conditions: Record<string, string> = { "accept-encoding": "identity", ...validatorsOf(cached) }
        // The unlocked revalidation's 200, when it answered the question this attempt asks.
        const answered = unlocked !== undefined && !waited && Option.isSome(cached) &&
            cached.value.fetchedAt === unlocked.meta.fetchedAt
          ? unlocked.response
          : undefined
        if (unlocked !== undefined) {
          if (answered === undefined) yield* unlocked.response.discard
          unlocked = undefined
        }
        const response = answered ?? (yield* request(conditions))
        if (response.status === 304 && Option.isSome(cached)) {
          yield* response.consume
          return yield* fromCache(cached.value)
        }
        if (response.status !== 200) {
          yield* response.discard
          return yield* response.status === 206
            ? Effect.fail(new transfer.Retryable({ reason: "the server answered a range that was not asked for" }))
            : Effect.fail(statusFailure(location, response))
        }
        // The answer is the engine's first read, when it asks for the whole file (else it is closed,
        // as is one an earlier attempt left unread).
        const stale = primed.get(url)
        if (stale !== undefined) yield* stale.discard
        primed.set(url, response)
        const { ranged, size, version } = resolution(response, false)
        // A server that announces no size: one stream of whatever its body holds, never resumed.
        return yield* intoPlace({
          key: url,
          name,
          size: size ?? 0,
          unsized: size === undefined,
          etag: version?.validator ?? "",
          ranged: ranged && !rangesIgnored && size !== undefined,
          checks
        }, version, Option.isSome(found))
      })

      // Interrupted or failed: a partial download of 8 MiB or more stays in the cache (never
      // under the final name), with its resume record: the next run resumes it.
      return yield* transfer.retrying({
        location,
        schedule: options.schedule,
        maxRetryAfter: options.maxRetryAfter,
        attempt
      })
    }))
  })

/**
 * What a URL's answer says of its file: its size (Content-Range's total, or
 * a 200's Content-Length), its version (a strong ETag, else Last-Modified),
 * and whether ranges of that version can be read (a 206 to a range asked
 * for, or a 200 that says it accepts byte ranges).
 */
const resolution = (response: network.Answer, askedRange: boolean) => {
  const etag = strongEtag(response.headers["etag"])
  const lastModified = response.headers["last-modified"]
  const version: Version | undefined = etag !== undefined
    ? { kind: "etag", validator: etag }
    : lastModified !== undefined
    ? { kind: "last-modified", validator: lastModified }
    : undefined
  const length = response.headers["content-length"]
  const size = response.status === 206 || response.status === 416
    ? parseContentRange(response.headers["content-range"])?.total
    : response.status === 200 && length !== undefined
    ? Number(length)
    : undefined
  const ranged = version !== undefined &&
    (response.status === 206 ||
      (!askedRange && response.status === 200 && response.headers["accept-ranges"]?.toLowerCase() === "bytes"))
  return {
    size: size !== undefined && Number.isSafeInteger(size) && size >= 0 ? size : undefined,
    version,
    ranged
  }
}

/**
 * The HTTP storage's URLs as a source of the transfer engine (the memory
 * sink's, with `cache: false`): its listing is the URLs, each resolved by
 * its first answer to a one-byte range (the size from Content-Range, the
 * version from a strong ETag or Last-Modified, ranges possible when the
 * server answered 206 with a version), and its reads carry `If-Range` with
 * that version, so that every part comes from it or the answer says the
 * file changed. A server that announces no size (no Content-Length, no
 * Content-Range) cannot be read into a buffer of the file's size: that is a
 * `RequestRejected` naming the way out (the cache).
 *
 * @internal
 */
export const source = (options: {
  readonly urls: ReadonlyArray<string>
  readonly expected: ReadonlyMap<string, string>
  readonly headers: FetchOptions["headers"]
  readonly connectTimeout: Duration.Duration
  readonly concurrency: number
  readonly connect: Effect.Effect<network.Send, StorageError.StorageError, Scope.Scope>
}): snapshot.Source<network.Send> => {
  // The version each URL was resolved with, and of which kind, for the If-Range of its reads.
  const versions = new Map<string, Version>()
  const read = reader({ ...options, versions })
  const resolve = (send: network.Send, url: string) =>
    Effect.gen(function*() {
      const { location, request } = requester(send, url, options)
      const response = yield* request({ "accept-encoding": "identity", range: "bytes=0-0" })
      yield* response.discard
      const { ranged, size, version } = resolution(response, true)
      if (response.status !== 200 && response.status !== 206 && !(response.status === 416 && size === 0)) {
        return yield* statusFailure(location, response)
      }
      if (size === undefined) {
        return yield* new StorageError.RequestRejected({
          location,
          status: response.status,
          reason: "the server does not say how large the file is (no Content-Length or Content-Range), which loading " +
            "straight into memory needs: load it through the cache (cache: true)"
        })
      }
      if (version !== undefined) versions.set(url, version)
      const expected = options.expected.get(url)
      return {
        key: url,
        name: nameOf(url),
        size,
        etag: version?.validator ?? "",
        ranged,
        checks: expected === undefined ? [] : [{ algorithm: "sha256", expected, label: "sha256" }]
      } satisfies snapshot.Listed
    })
  return {
    ...read,
    folder: "http",
    cacheKey: options.urls,
    prefix: "",
    mask: /(?:)/,
    maskField: "urls",
    named: true,
    nothingListed: "no URL",
    connect: options.connect,
    list: (send) => Effect.forEach(options.urls, (url) => resolve(send, url), { concurrency: options.concurrency })
  }
}

/** The version of a URL's file, and of which kind, for the If-Range of its reads. @internal */
export interface Version {
  readonly kind: "etag" | "last-modified"
  readonly validator: string
}


/**
 * The HTTP storage's reads for the transfer engine: a GET of a URL, or of a
 * range of it with `If-Range` its version (from `versions`); an answer that
 * carries another version, or another total size, says so (the engine then
 * refuses to splice it), as does a 416 (the range is past the end of what
 * the server has now); a server that answers a range with the whole of the
 * same version is retried. An answer already in hand for a URL (`primed`:
 * the 200 that resolved it) is its first whole read.
 *
 * @internal
 */
export const reader = (options: {
  readonly headers: FetchOptions["headers"]
  readonly connectTimeout: Duration.Duration
  readonly versions: ReadonlyMap<string, Version>
  readonly primed?: Map<string, network.Answer> | undefined
  /**
   * Told when a ranged read is answered with the whole file of the same
   * version (a server that ignores Range): the answer then reads as another
   * version, so that the caller starts over without ranges. Without it, the
   * read is retried.
   */
  readonly onRangesIgnored?: (() => void) | undefined
}): engine.Reader<network.Send> => {
  const versions = options.versions
  return {
    storageType: "http",
    locationOf: (key) => (key === "" ? "" : errors.redactUrl(key)),
    get: (send, entry, range) =>
      Effect.gen(function*() {
        const { location, request } = requester(send, entry.key, options)
        const version = versions.get(entry.key)
        const conditions: Record<string, string> = { "accept-encoding": "identity" }
        if (range !== undefined) {
          conditions.range = `bytes=${range.start}-${range.end - 1}`
          if (version !== undefined) conditions["if-range"] = version.validator
        }
        const inHand = options.primed?.get(entry.key)
        if (inHand !== undefined) {
          options.primed!.delete(entry.key)
          if (range !== undefined) yield* inHand.discard
        }
        const response = inHand !== undefined && range === undefined ? inHand : yield* request(conditions)
        // Closed with the read's scope unless its body was read to the end (its connection is then reused).
        yield* Effect.addFinalizer(() => response.discard)
        const answered = version === undefined ? undefined : validatorOf(version.kind, response)
        if (response.status === 206 && range !== undefined) {
          const served = parseContentRange(response.headers["content-range"])
          if (served?.total !== undefined && served.total !== entry.size) {
            return { body: undefined, etag: answered, changed: `a file of ${served.total} bytes now` } satisfies snapshot.Got
          }
          return { body: response.body, etag: answered, range: { start: served?.start, end: served?.end } } satisfies snapshot.Got
        }
        if (response.status === 200 && range === undefined) {
          const length = response.headers["content-length"]
          // Another size than resolved: another file (or a server that announced a wrong length).
          if (entry.unsized !== true && length !== undefined && Number(length) !== entry.size) {
            return { body: undefined, etag: answered, changed: `a file of ${length} bytes now` } satisfies snapshot.Got
          }
          return { body: response.body, etag: answered } satisfies snapshot.Got
        }
        if (response.status === 200) {
          // The whole file, to a ranged read: a newer version (If-Range failed), or a server that stopped serving ranges.
          if (answered !== undefined && answered !== version?.validator) return { body: undefined, etag: answered } satisfies snapshot.Got
          if (options.onRangesIgnored !== undefined) {
            options.onRangesIgnored()
            return { body: undefined, etag: answered, changed: "the whole file (the server ignores ranges)" } satisfies snapshot.Got
          }
          return yield* new transfer.Retryable({ reason: "the server answered a ranged read with the whole file" })
        }
        if (response.status === 416 && range !== undefined && version !== undefined) {
          return { body: undefined, etag: answered, changed: "416: the range is past the end of the file now" } satisfies snapshot.Got
        }
        return yield* statusFailure(location, response)
      })
  }
}
