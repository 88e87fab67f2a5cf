import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
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

/**
 * What a partial download needs to resume: the validator it was started with
 * (a strong ETag, else Last-Modified) and the total size the server announced.
 */
interface PartialMeta {
  readonly key: string
  readonly validator: string
  readonly kind: "etag" | "last-modified"
  readonly total?: number
  /** A download in parallel parts: their size, and those already flushed (in the file at their offsets). */
  readonly partSize?: number
  readonly parts?: ReadonlyArray<number>
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
/** Bodies up to this size are not resumed (fetched again whole). */
const resumableFrom = 512 * 1024
/** Bodies from this size on are hashed in a worker thread (starting one costs a few milliseconds). */
const hashBehindFrom = 8 * 1024 * 1024
const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const strongEtag = (etag: string | undefined): string | undefined =>
  etag !== undefined && !etag.startsWith("W/") ? etag : undefined

const parseContentRange = transfer.parseContentRange

/** The version an answer carries, of the kind a partial download was started with. */
const validatorOf = (kind: PartialMeta["kind"] | undefined, response: HttpClientResponse.HttpClientResponse) =>
  kind === "etag" ? strongEtag(response.headers["etag"]) : response.headers["last-modified"]

const statusFailure = (url: string, response: HttpClientResponse.HttpClientResponse) => {
  const status = response.status
  if (status === 401 || status === 403) return new StorageError.Unauthorized({ location: url, status })
  if (status === 407) return network.proxyRefused(url)
  if (status === 404 || status === 410) return new StorageError.RemoteNotFound({ location: url, status })
  if (status === 408 || status === 429 || status >= 500) {
    return new transfer.Retryable({
      reason: `HTTP ${status}`,
      status,
      retryAfter: transfer.parseRetryAfter(response.headers["retry-after"])
    })
  }
  return new StorageError.RequestRejected({ location: url, status, reason: `unexpected HTTP ${status}` })
}

/**
 * Drops a response whose body is not wanted: on Node its connection is closed
 * at once (the body may be large); elsewhere the body is read and dropped.
 */
const discard = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> => {
  const readable = nodeDrain.readableOf(response)
  return readable !== undefined ? Effect.sync(() => readable.destroy()) : Effect.ignore(Stream.runDrain(response.stream))
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
  client: HttpClient.HttpClient,
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
  const send = (target: string, conditions: Record<string, string>) =>
    client.execute(
      HttpClientRequest.get(target).pipe(
        HttpClientRequest.setHeaders(secretHeaders(target)),
        HttpClientRequest.setHeaders(conditions)
      )
    ).pipe(
      Effect.timeoutFail({
        duration: options.connectTimeout,
        onTimeout: () =>
          new transfer.Retryable({ reason: `no response within ${Duration.format(options.connectTimeout)}` })
      }),
      Effect.catchTags({
        RequestError: (error) => {
          // A certificate that is not accepted is not accepted on a retry either.
          const refused = network.refusalOf(error.cause, location)
          return refused !== undefined
            ? Effect.fail(refused)
            : Effect.fail(
              new transfer.Retryable({ reason: `request failed: ${errors.redactText(String(error.cause ?? error.message))}` })
            )
        },
        ResponseError: (error) =>
          Effect.fail(
            new transfer.Retryable({ reason: `bad response: ${errors.redactText(String(error.cause ?? error.message))}` })
          )
      })
    )

  // One request, redirects followed.
  const request = (conditions: Record<string, string>) =>
    Effect.gen(function*() {
      let response = yield* send(url, conditions)
      for (let hops = 0; isRedirect(response.status) && response.headers["location"] !== undefined; hops++) {
        if (hops === maxRedirects) {
          return yield* new StorageError.RequestRejected({
            location,
            status: response.status,
            reason: `more than ${maxRedirects} redirects`
          })
        }
        yield* Effect.ignore(response.text)
        response = yield* send(new URL(response.headers["location"], response.request.url).href, conditions)
      }
      return response
    })


  return { location, request, secretHeaders }
}

/**
 * Fetches one URL into the cache and returns the cached file. Under the
 * entry's lock: re-checks a cached copy (re-hashed when its identity on disk
 * changed) and reuses it when the server confirms it (304); resumes a partial
 * download with Range + If-Range, and accepts the 206 only when it carries
 * the partial's validator and total size (else starts over); checks the free
 * space before the body; streams the body into a staging file while hashing
 * it, verifies it, flushes it and only then renames it into place.
 *
 * @internal
 */
export const fetch = (
  url: string,
  expectedSha256: string | undefined,
  options: FetchOptions,
  tracker: transfer.Tracker,
  /** Node's lighter way to ask for a revalidation (see `network.Probe`). */
  probe?: network.Probe | undefined
): Effect.Effect<
  Fetched,
  StorageError.StorageError,
  HttpClient.HttpClient | FileSystem.FileSystem | Path.Path
> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const client = yield* HttpClient.HttpClient
    // What messages, logs and progress show: never the URL's credentials or signature.
    const location = errors.redactUrl(url)
    const key = cache.keyOf(url)
    const name = nameOf(url)
    const dir = path.join(options.cacheDir, "http", key)
    const file = path.join(dir, name)
    const metaFile = path.join(dir, "meta.json")
    const partial = path.join(dir, `${name}.partial`)
    const partialMetaFile = path.join(dir, "partial.json")
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
      Effect.as(progress.cached(meta.size), { file, name, size: meta.size } satisfies Fetched)

    // The conditions that ask the server whether a cached copy is still current.
    const validatorsOf = (meta: Option.Option<Meta>): Record<string, string> =>
      Option.isNone(meta)
        ? {}
        : meta.value.etag !== undefined
        ? { "if-none-match": meta.value.etag }
        : meta.value.lastModified !== undefined
        ? { "if-modified-since": meta.value.lastModified }
        : {}

    const { request, secretHeaders } = requester(client, url, options)

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
    // confirmed by the server (304) and delivered, in two system calls. Any
    // other answer goes the locked way below, which writes: a 200 (a new
    // version, or a server that ignores conditional requests) is used there
    // unless the lock had to be waited for or the cache changed meanwhile.
    let unlocked: { readonly response: HttpClientResponse.HttpClientResponse; readonly meta: Meta } | undefined
    if (options.verify === "changed") {
      const meta = yield* readMeta
      if (Option.isSome(meta) && meta.value.identity !== undefined && Object.keys(validatorsOf(meta)).length > 0) {
        const identity = yield* cache.identityOf(file)
        if (Option.isSome(identity) && identity.value === meta.value.identity && probe !== undefined) {
          // On Node: one bodiless request; anything but a 304 goes the locked way.
          const status = yield* probe(
            url,
            { "accept-encoding": "identity", ...secretHeaders(url), ...validatorsOf(meta) },
            Duration.toMillis(options.connectTimeout)
          )
          if (Option.isSome(status) && status.value === 304) return yield* fromCache(meta.value)
        } else if (Option.isSome(identity) && identity.value === meta.value.identity) {
          const response = yield* Effect.catchIf(
            Effect.map(request({ "accept-encoding": "identity", ...validatorsOf(meta) }), Option.some),
            (error) => error instanceof transfer.Retryable,
            () => Effect.succeedNone
          )
          if (Option.isSome(response)) {
            if (response.value.status === 304) {
              yield* Effect.ignore(response.value.text)
              return yield* fromCache(meta.value)
            }
            if (response.value.status === 200) unlocked = { response: response.value, meta: meta.value }
            else yield* discard(response.value)
          }
        }
      }
    }

    yield* cache.ensureDir(dir)
    const waitStarted = Date.now()

    return yield* Effect.scoped(Effect.gen(function*() {
      // The unlocked answer is closed, whatever happens, unless it was used.
      yield* Effect.addFinalizer(() => (unlocked === undefined ? Effect.void : discard(unlocked.response)))
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

      // A verified staging file goes into place (flushed, renamed, folder
      // flushed). The old metadata goes first, so no moment pairs a new file
      // with old metadata.
      const complete = (
        written: number,
        /** The whole file's sha256, or (in parts, without an expected digest) its parts'. */
        verified: string | { readonly digests: ReadonlyArray<string>; readonly partSize: number },
        validators: { readonly etag: string | undefined; readonly lastModified: string | undefined },
        /** The staging file was flushed as it was closed (the Node drain does it). */
        flushed: boolean
      ) =>
        Effect.gen(function*() {
          if (expected !== undefined && verified !== expected) {
            yield* cache.removeAll(partial, partialMetaFile)
            return yield* new StorageError.ChecksumMismatch({
              location,
              algorithm: "sha256",
              expected,
              actual: typeof verified === "string" ? verified : "(not computed)"
            })
          }
          yield* cache.removeAll(metaFile)
          // One flush of the folder, after both renames (the file's, then its metadata's).
          yield* cache.commit(partial, file, { syncFolder: false, flushed })
          const identity = yield* cache.identityOf(file)
          const meta: Meta = {
            key,
            name,
            size: written,
            ...(typeof verified === "string" ? { sha256: verified } : verified),
            ...(validators.etag === undefined ? {} : { etag: validators.etag }),
            ...(validators.lastModified === undefined ? {} : { lastModified: validators.lastModified }),
            fetchedAt: Date.now(),
            ...(Option.isSome(identity) ? { identity: identity.value } : {})
          }
          // Not flushed itself: a record cut short by a power loss reads as none, and the file is
          // then fetched again; the folder's flush below makes both renames durable.
          yield* cache.writeJsonAtomic(metaFile, meta, { flush: false })
          yield* cache.sync(dir)
          yield* cache.removeAll(partialMetaFile)
          yield* progress.finish(written)
          return { file, name, size: written } satisfies Fetched
        })

      const sizeOf = (target: string) =>
        Effect.map(Effect.option(fs.stat(target)), Option.match({ onNone: () => 0, onSome: (info) => Number(info.size) }))

      // A large file from a server that accepts ranges of one version: the
      // transfer engine's parts (as every remote source's), each a ranged GET
      // checked against that version (If-Range, then the answer's validator),
      // checkpointed as it arrives and resumed from its record, the sha256
      // computed in a worker as parts finish in order. The engine's partial
      // file becomes the staging file; `complete` puts it in place. A new
      // version on the server during the download: started over.
      const inParts = (record: PartialMeta & { readonly total: number; readonly partSize: number }) =>
        Effect.gen(function*() {
          yield* cache.writeJsonHint(partialMetaFile, { ...record, parts: [] } satisfies PartialMeta)
          const work = yield* engine.make(
            reader({ ...options, versions: new Map([[url, { kind: record.kind, validator: record.validator }]]) }),
            // Each part is retried by the engine under the storage's policy; a new version starts the attempt over.
            { ...options, concurrency: 1 },
            dir
          ).pipe(Effect.provideService(FileSystem.FileSystem, fs), Effect.provideService(Path.Path, path))
          const entry: engine.Entry = {
            key: url,
            name,
            size: record.total,
            etag: record.validator,
            ranged: true,
            // The whole file is hashed only to check an expected digest: else its parts' digests verify it.
            checks: expected === undefined ? [] : [{ algorithm: "sha256", expected, label: "sha256" }]
          }
          const startOver = cache.removeAll(partial, partialMetaFile, work.partialOf(entry).data, work.partialOf(entry).record).pipe(
            Effect.zipRight(Effect.logWarning(`${errors.cap(location)} changed on the server during the download; starting over`)),
            Effect.zipRight(Effect.fail(new transfer.Retryable({ reason: "the file changed on the server during the download; starting over" })))
          )
          const done = yield* work.download(client, entry, partial, tracker).pipe(
            Effect.catchAll((error): Effect.Effect<never, StorageError.StorageError | transfer.Retryable> =>
              error._tag === "ChecksumMismatch" && error.algorithm.startsWith("ETag") ? startOver : Effect.fail(error)
            )
          )
          return yield* complete(record.total, done.checked[0] ?? { digests: done.digests, partSize: done.partSize }, {
            etag: record.kind === "etag" ? record.validator : undefined,
            lastModified: record.kind === "last-modified" ? record.validator : undefined
          }, true)
        })

      const attempt = Effect.gen(function*() {
        // A partial file is resumed only with the validator it was started with.
        let partialMeta = Option.filter(
          yield* cache.readJson<PartialMeta>(partialMetaFile),
          (meta) => meta.key === key && (meta.kind === "etag" || meta.kind === "last-modified")
        )
        // A download in parallel parts goes on with the parts still missing.
        if (Option.isSome(partialMeta) && partialMeta.value.parts !== undefined) {
          const { partSize, total } = partialMeta.value
          if (partSize !== undefined && partSize > 0 && total !== undefined) {
            return yield* inParts({ ...partialMeta.value, partSize, total })
          }
        }
        let partialSize = Option.isSome(partialMeta) ? yield* sizeOf(partial) : 0

        const conditions: Record<string, string> = { "accept-encoding": "identity", ...validatorsOf(cached) }
        const resumeConditions = (meta: PartialMeta): Record<string, string> => ({
          ...conditions,
          range: `bytes=${partialSize}-`,
          "if-range": meta.validator
        })
        const resumeFrom = partialSize > 0 ? Option.getOrUndefined(partialMeta) : undefined
        // The unlocked revalidation's 200, when it answered the question this attempt asks.
        const answered = unlocked !== undefined && !waited && resumeFrom === undefined && Option.isSome(cached) &&
            cached.value.fetchedAt === unlocked.meta.fetchedAt
          ? unlocked.response
          : undefined
        if (unlocked !== undefined) {
          if (answered === undefined) yield* discard(unlocked.response)
          unlocked = undefined
        }
        let response = answered ?? (yield* request(resumeFrom !== undefined ? resumeConditions(resumeFrom) : conditions))

        // A 206 is appended to the partial file only when it continues the same
        // version: the partial's validator and total size, from the partial's
        // end. A server that ignores If-Range answers a newer version with 206
        // all the same: then the partial goes, and the download starts over.
        if (response.status === 206 && resumeFrom !== undefined) {
          const range = parseContentRange(response.headers["content-range"])
          const meta = resumeFrom
          const validatorNow = validatorOf(meta.kind, response)
          const mismatch = range === undefined || range.start !== partialSize
            ? "the server answered another range"
            : validatorNow !== meta.validator
            ? `the server's ${meta.kind === "etag" ? "ETag" : "Last-Modified"} is now ${validatorNow ?? "absent"}, not ${meta.validator}`
            : meta.total !== undefined && range.total !== meta.total
            ? `the total size is now ${range.total ?? "unknown"}, not ${meta.total}`
            : undefined
          if (mismatch !== undefined) {
            yield* Effect.ignore(response.text)
            yield* Effect.logWarning(`Not resuming ${errors.cap(location)}: ${mismatch}; starting over from byte 0`)
            yield* cache.removeAll(partial, partialMetaFile)
            partialMeta = Option.none()
            partialSize = 0
            response = yield* request(conditions)
          }
        }

        if (response.status === 304 && Option.isSome(cached)) {
          yield* Effect.ignore(response.text)
          return yield* fromCache(cached.value)
        }
        if (response.status === 416) {
          yield* Effect.ignore(response.text)
          const range = parseContentRange(response.headers["content-range"])
          const validatorNow = validatorOf(Option.getOrUndefined(partialMeta)?.kind, response)
          if (
            partialSize > 0 && Option.isSome(partialMeta) && range?.total === partialSize &&
            (validatorNow === undefined || validatorNow === partialMeta.value.validator)
          ) {
            // The partial file already holds every byte (the last attempt ended
            // after the body, on a wrong Content-Length): verify it and finish.
            const meta = partialMeta.value
            return yield* complete(partialSize, (yield* cache.hashInto(fs, partial, crypto.createHash("sha256"))).digest("hex"), {
              etag: meta.kind === "etag" ? meta.validator : undefined,
              lastModified: meta.kind === "last-modified" ? meta.validator : undefined
            }, false)
          }
          // The partial file is no prefix of what the server has now: start over.
          yield* cache.removeAll(partial, partialMetaFile)
          return yield* new transfer.Retryable({ reason: "the server refused to resume (416); starting over" })
        }
        if (response.status !== 200 && response.status !== 206) {
          return yield* Effect.zipRight(Effect.ignore(response.text), Effect.fail(statusFailure(location, response)))
        }

        let start = 0
        let total: number | undefined
        const contentLength = response.headers["content-length"]
        if (response.status === 206) {
          const range = parseContentRange(response.headers["content-range"])
          if (!(partialSize > 0 && Option.isSome(partialMeta)) || range === undefined || range.start !== partialSize) {
            yield* Effect.ignore(response.text)
            yield* cache.removeAll(partial, partialMetaFile)
            return yield* new transfer.Retryable({ reason: "the server answered a range that was not asked for; starting over" })
          }
          start = partialSize
          total = range.total
        } else {
          // 200: a new file, or a server that ignores Range: start from byte 0.
          // The old partial goes first, so that its space is free for the new one.
          total = contentLength === undefined ? undefined : Number(contentLength)
          if (partialSize > 0 || Option.isSome(partialMeta)) yield* cache.removeAll(partial, partialMetaFile)
          partialSize = 0
        }

        // Is there room for the rest? Checked before any byte is written.
        if (total !== undefined) {
          yield* Effect.catchAll(cache.ensureSpace(dir, total - start), (error) =>
            Effect.zipRight(Effect.ignore(response.text), Effect.fail(error)))
        }

        // The resume record is written only when it changes (on a full disk
        // even this small write may fail: a resume must not need it).
        const etag = strongEtag(response.headers["etag"])
        const lastModified = response.headers["last-modified"]
        const record: PartialMeta | undefined = etag !== undefined
          ? { key, validator: etag, kind: "etag", ...(total === undefined ? {} : { total }) }
          : lastModified !== undefined
          ? { key, validator: lastModified, kind: "last-modified", ...(total === undefined ? {} : { total }) }
          : undefined
        if (
          start === 0 && response.status === 200 && record !== undefined && total !== undefined &&
          total >= options.multipartThreshold && options.partConcurrency > 1 &&
          response.headers["accept-ranges"]?.toLowerCase() === "bytes" && nodeDrain.readableOf(response) !== undefined
        ) {
          yield* discard(response)
          return yield* inParts({ ...record, total, partSize: options.partSize })
        }
        // A body of a few hundred KiB is fetched again rather than resumed:
        // no record (two file creations fewer for each of many small files).
        if (start === 0) {
          if (record !== undefined && (total === undefined || total > resumableFrom)) {
            yield* cache.writeJsonHint(partialMetaFile, record)
          } else if (Option.isSome(partialMeta)) {
            yield* cache.removeAll(partialMetaFile)
          }
        }

        // On Node, the body is piped straight into the file; elsewhere, streamed through Effect.
        const source = nodeDrain.readableOf(response)
        let written = start
        const digest = yield* Effect.scoped(Effect.gen(function*() {
          // A large body on Node is hashed behind its writes, from the file, in a worker
          // thread (the event loop only receives and writes); a small one as it arrives.
          const behind = source !== undefined && (total === undefined || total >= hashBehindFrom)
            ? yield* cache.rangeHasher(partial)
            : undefined
          const hash = crypto.createHash("sha256")
          if (start > 0) {
            // The bytes already there count towards the hash.
            if (behind !== undefined) behind.add(0, start)
            else yield* cache.hashInto(fs, partial, hash)
          }
          yield* progress.start(total, start)
          const onBytes = behind !== undefined
            ? (chunk: Uint8Array) => void (written += chunk.byteLength)
            : (chunk: Uint8Array) => {
              hash.update(chunk)
              written += chunk.byteLength
            }
          // A 206 may end before the total (a server that caps its answers, as
          // RFC 9110 allows): the rest is asked for from there, under the same
          // version, and appended.
          for (let answer = response;;) {
            const body = nodeDrain.readableOf(answer)
            const from = written
            yield* body !== undefined
              ? nodeDrain.drain({
                body,
                file: partial,
                flags: from > 0 ? "a" : "w",
                appendsAt: from,
                onBytes,
                progress,
                stallTimeout: options.stallTimeout,
                ...(behind === undefined ? {} : { onWritten: behind.add })
              })
              : Effect.scoped(Effect.flatMap(
                Effect.mapError(fs.open(partial, { flag: from > 0 ? "a" : "w" }), errors.writeFailed(partial, "open")),
                (handle) =>
                  transfer.drain({
                    body: Stream.mapError(answer.stream, (error) =>
                      new transfer.Retryable({ reason: `the body was cut off after ${written} bytes (${error.message})` })),
                    write: (bytes) => Effect.mapError(handle.writeAll(bytes), errors.writeFailed(partial, "write")),
                    onBytes,
                    progress,
                    stallTimeout: options.stallTimeout
                  })
              ))
            const served = answer.status === 206 ? parseContentRange(answer.headers["content-range"])?.end : undefined
            if (record === undefined || total === undefined || served === undefined || served >= total || written !== served) break
            answer = yield* request({ "accept-encoding": "identity", range: `bytes=${written}-`, "if-range": record.validator })
            const range = parseContentRange(answer.headers["content-range"])
            const validatorNow = validatorOf(record.kind, answer)
            if (
              answer.status !== 206 || range?.start !== written || range.total !== total ||
              validatorNow !== record.validator
            ) {
              yield* discard(answer)
              return yield* new transfer.Retryable({
                reason: `the server answered the rest from byte ${written} with another range or version`
              })
            }
          }

          if (total !== undefined && written < total) {
            return yield* new transfer.Retryable({ reason: `the body ended after ${written} of ${total} bytes` })
          }
          if (total !== undefined && written > total) {
            yield* cache.removeAll(partial, partialMetaFile)
            return yield* new transfer.Retryable({ reason: `the body had ${written} bytes, more than the ${total} announced` })
          }
          return behind !== undefined ? yield* behind.digest : hash.digest("hex")
        }))
        return yield* complete(written, digest, { etag, lastModified }, source !== undefined)
      })

      // Interrupted or failed: the partial file stays in the cache (never
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
  readonly connect: Effect.Effect<HttpClient.HttpClient, StorageError.StorageError, Scope.Scope>
}): snapshot.Source<HttpClient.HttpClient> => {
  // The version each URL was resolved with, and of which kind, for the If-Range of its reads.
  const versions = new Map<string, Version>()
  const read = reader({ ...options, versions })
  const resolve = (client: HttpClient.HttpClient, url: string) =>
    Effect.gen(function*() {
      const { location, request } = requester(client, url, options)
      const response = yield* request({ "accept-encoding": "identity", range: "bytes=0-0" })
      yield* discard(response)
      const etag = strongEtag(response.headers["etag"])
      const lastModified = response.headers["last-modified"]
      const version = etag !== undefined
        ? { kind: "etag" as const, validator: etag }
        : lastModified !== undefined
        ? { kind: "last-modified" as const, validator: lastModified }
        : undefined
      const range = parseContentRange(response.headers["content-range"])
      const size = response.status === 206 || response.status === 416
        ? range?.total
        : response.status === 200 && response.headers["content-length"] !== undefined
        ? Number(response.headers["content-length"])
        : undefined
      if (response.status !== 200 && response.status !== 206 && !(response.status === 416 && size === 0)) {
        return yield* statusFailure(location, response)
      }
      if (size === undefined || !Number.isSafeInteger(size) || size < 0) {
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
        ranged: response.status === 206 && version !== undefined,
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
    list: (client) => Effect.forEach(options.urls, (url) => resolve(client, url), { concurrency: options.concurrency })
  }
}

/** The version of a URL's file, and of which kind, for the If-Range of its reads. @internal */
export interface Version {
  readonly kind: "etag" | "last-modified"
  readonly validator: string
}

const bodyOf = (response: HttpClientResponse.HttpClientResponse): unknown =>
  nodeDrain.readableOf(response) ?? Stream.toAsyncIterable(response.stream)

/**
 * The HTTP storage's reads for the transfer engine: a GET of a URL, or of a
 * range of it with `If-Range` its version (from `versions`); an answer that
 * carries another version says so (the engine then refuses to splice it), a
 * server that answers a range with the whole of the same version is retried.
 *
 * @internal
 */
export const reader = (options: {
  readonly headers: FetchOptions["headers"]
  readonly connectTimeout: Duration.Duration
  readonly versions: ReadonlyMap<string, Version>
}): engine.Reader<HttpClient.HttpClient> => {
  const versions = options.versions
  return {
    storageType: "http",
    locationOf: (key) => (key === "" ? "" : errors.redactUrl(key)),
    get: (client, entry, range) =>
      Effect.gen(function*() {
        const { location, request } = requester(client, entry.key, options)
        const version = versions.get(entry.key)
        const conditions: Record<string, string> = { "accept-encoding": "identity" }
        if (range !== undefined) {
          conditions.range = `bytes=${range.start}-${range.end - 1}`
          if (version !== undefined) conditions["if-range"] = version.validator
        }
        const response = yield* request(conditions)
        // Closed with the read's scope unless its body was read to the end (its connection is then reused).
        yield* Effect.addFinalizer(() => nodeDrain.readableOf(response)?.readableEnded === true ? Effect.void : discard(response))
        const answered = version === undefined ? undefined : validatorOf(version.kind, response)
        if (response.status === 206 && range !== undefined) {
          const served = parseContentRange(response.headers["content-range"])
          return { body: bodyOf(response), etag: answered, range: { start: served?.start, end: served?.end } } satisfies snapshot.Got
        }
        if (response.status === 200 && range === undefined) {
          return { body: bodyOf(response), etag: answered } satisfies snapshot.Got
        }
        if (response.status === 200) {
          // The whole file, to a ranged read: a newer version (If-Range failed), or a server that stopped serving ranges.
          if (answered !== undefined && answered !== version?.validator) return { body: undefined, etag: answered } satisfies snapshot.Got
          return yield* new transfer.Retryable({ reason: "the server answered a ranged read with the whole file" })
        }
        return yield* statusFailure(location, response)
      })
  }
}
