import * as FileSystem from "@effect/platform/FileSystem"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as nodeDrain from "./nodeDrain.js"
import * as transfer from "./transfer.js"

/**
 * What the cache knows of a complete, verified file. Written after the file is
 * in place, removed before it is replaced: a file without it is not trusted.
 *
 * @internal
 */
export interface Meta {
  readonly url: string
  readonly name: string
  readonly size: number
  readonly sha256: string
  readonly etag?: string
  readonly lastModified?: string
  readonly fetchedAt: number
}

/** What a partial download needs to resume: the validator for If-Range. */
interface PartialMeta {
  readonly url: string
  readonly validator: string
  readonly total?: number
}

/** @internal */
export interface FetchOptions {
  readonly cacheDir: string
  readonly headers: Readonly<Record<string, Redacted.Redacted<string>>>
  readonly connectTimeout: Duration.Duration
  readonly stallTimeout: Duration.Duration
  readonly schedule: Schedule.Schedule<unknown, transfer.Retryable>
  readonly maxRetryAfter: Duration.Duration
  readonly offline: boolean
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
const isRedirect = (status: number) =>
  status === 301 || status === 302 || status === 303 || status === 307 || status === 308

const strongEtag = (etag: string | undefined): string | undefined =>
  etag !== undefined && !etag.startsWith("W/") ? etag : undefined

// "bytes 100-199/1000" (a 206) or "bytes star/1000" (a 416)
const parseContentRange = (value: string | undefined) => {
  const match = value === undefined ? null : /^bytes (?:(\d+)-\d+|\*)\/(\d+|\*)$/.exec(value.trim())
  if (match === null) return undefined
  return {
    start: match[1] === undefined ? undefined : Number(match[1]),
    total: match[2] === "*" ? undefined : Number(match[2])
  }
}

const statusFailure = (url: string, response: HttpClientResponse.HttpClientResponse) => {
  const status = response.status
  if (status === 401 || status === 403) return new StorageError.Unauthorized({ location: url, status })
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
 * Fetches one URL into the cache and returns the cached file. Under the
 * entry's lock: reuses a cached copy the server confirms (304), resumes a
 * partial download with Range + If-Range, streams the body into a staging
 * file while hashing it, verifies it, and only then renames it into place.
 *
 * @internal
 */
export const fetch = (
  url: string,
  expectedSha256: string | undefined,
  options: FetchOptions,
  tracker: transfer.Tracker
): Effect.Effect<
  Fetched,
  StorageError.StorageError,
  HttpClient.HttpClient | FileSystem.FileSystem | Path.Path
> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const client = yield* HttpClient.HttpClient
    const name = nameOf(url)
    const dir = path.join(options.cacheDir, "http", cache.keyOf(url))
    const file = path.join(dir, name)
    const metaFile = path.join(dir, "meta.json")
    const partial = path.join(dir, `${name}.partial`)
    const partialMetaFile = path.join(dir, "partial.json")
    const progress = tracker.file(url, name)
    const expected = expectedSha256?.toLowerCase()

    const readMeta = Effect.gen(function*() {
      const meta = yield* cache.readJson<Meta>(fs, metaFile)
      if (Option.isNone(meta) || meta.value.url !== url || meta.value.name !== name) return Option.none<Meta>()
      const info = yield* Effect.option(fs.stat(file))
      return Option.isSome(info) && Number(info.value.size) === meta.value.size ? meta : Option.none<Meta>()
    })

    const fromCache = (meta: Meta) =>
      Effect.as(progress.cached(meta.size), { file, name, size: meta.size } satisfies Fetched)

    if (options.offline) {
      const meta = yield* readMeta
      if (Option.isSome(meta) && (expected === undefined || meta.value.sha256 === expected)) {
        return yield* fromCache(meta.value)
      }
      return yield* new StorageError.NotCached({ location: url, cacheDir: options.cacheDir })
    }

    yield* cache.ensureDir(fs, dir)
    const waitStarted = Date.now()

    return yield* Effect.scoped(Effect.gen(function*() {
      const { waited } = yield* cache.lock(fs, path.join(dir, "lock"), url)
      const cached = Option.filter(
        yield* readMeta,
        (meta) => expected === undefined || meta.sha256 === expected
      )
      // Another process or fiber fetched it while this one waited: nothing to ask the server.
      if (waited && Option.isSome(cached) && cached.value.fetchedAt >= waitStarted) {
        return yield* fromCache(cached.value)
      }

      const writeError = (target: string, operation: string) => errors.writeFailed(target, operation)

      // A verified staging file goes into place. The old metadata goes first, so
      // no moment pairs a new file with old metadata.
      const complete = (
        written: number,
        digest: string,
        validators: { readonly etag: string | undefined; readonly lastModified: string | undefined }
      ) =>
        Effect.gen(function*() {
          if (expected !== undefined && digest !== expected) {
            yield* cache.removeAll(fs, partial, partialMetaFile)
            return yield* new StorageError.ChecksumMismatch({
              location: url,
              algorithm: "sha256",
              expected,
              actual: digest
            })
          }
          yield* cache.removeAll(fs, metaFile)
          yield* Effect.mapError(fs.rename(partial, file), writeError(file, "rename into place"))
          const meta: Meta = {
            url,
            name,
            size: written,
            sha256: digest,
            ...(validators.etag === undefined ? {} : { etag: validators.etag }),
            ...(validators.lastModified === undefined ? {} : { lastModified: validators.lastModified }),
            fetchedAt: Date.now()
          }
          yield* cache.writeJsonAtomic(fs, metaFile, meta)
          yield* cache.removeAll(fs, partialMetaFile)
          yield* progress.finish(written)
          return { file, name, size: written } satisfies Fetched
        })

      const hashOf = (target: string, hash: crypto.Hash) =>
        fs.stream(target, { chunkSize: 1024 * 1024 }).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => hash.update(chunk))),
          Effect.mapError(errors.fromPlatformError(target, "read")),
          Effect.as(hash)
        )

      const attempt = Effect.gen(function*() {
        // A partial file is resumed only with the validator it was started with.
        const partialMeta = Option.filter(
          yield* cache.readJson<PartialMeta>(fs, partialMetaFile),
          (meta) => meta.url === url
        )
        const partialSize = Option.isSome(partialMeta)
          ? Option.match(yield* Effect.option(fs.stat(partial)), {
            onNone: () => 0,
            onSome: (info) => Number(info.size)
          })
          : 0

        // Conditions and range go to every hop; the caller's headers (secrets) only to the URL's own origin.
        const conditions: Record<string, string> = { "accept-encoding": "identity" }
        if (Option.isSome(cached)) {
          if (cached.value.etag !== undefined) conditions["if-none-match"] = cached.value.etag
          else if (cached.value.lastModified !== undefined) conditions["if-modified-since"] = cached.value.lastModified
        }
        if (partialSize > 0 && Option.isSome(partialMeta)) {
          conditions["range"] = `bytes=${partialSize}-`
          conditions["if-range"] = partialMeta.value.validator
        }
        const origin = new URL(url).origin
        const send = (target: string) =>
          client.execute(
            HttpClientRequest.get(target).pipe(
              HttpClientRequest.setHeaders(
                new URL(target).origin === origin
                  ? Object.fromEntries(
                    Object.entries(options.headers).map(([key, value]) => [key, Redacted.value(value)])
                  )
                  : {}
              ),
              HttpClientRequest.setHeaders(conditions)
            )
          ).pipe(
            Effect.timeoutFail({
              duration: options.connectTimeout,
              onTimeout: () =>
                new transfer.Retryable({ reason: `no response within ${Duration.format(options.connectTimeout)}` })
            }),
            Effect.catchTags({
              RequestError: (error) =>
                Effect.fail(new transfer.Retryable({ reason: `request failed: ${error.cause ?? error.message}` })),
              ResponseError: (error) =>
                Effect.fail(new transfer.Retryable({ reason: `bad response: ${error.cause ?? error.message}` }))
            })
          )

        let response = yield* send(url)
        for (let hops = 0; isRedirect(response.status) && response.headers["location"] !== undefined; hops++) {
          if (hops === maxRedirects) {
            return yield* new StorageError.RequestRejected({
              location: url,
              status: response.status,
              reason: `more than ${maxRedirects} redirects`
            })
          }
          yield* Effect.ignore(response.text)
          response = yield* send(new URL(response.headers["location"], response.request.url).href)
        }

        if (response.status === 304 && Option.isSome(cached)) {
          yield* Effect.ignore(response.text)
          return yield* fromCache(cached.value)
        }
        if (response.status === 416) {
          yield* Effect.ignore(response.text)
          const range = parseContentRange(response.headers["content-range"])
          if (partialSize > 0 && Option.isSome(partialMeta) && range?.total === partialSize) {
            // The partial file already holds every byte (the last attempt ended
            // after the body, on a wrong Content-Length): verify it and finish.
            const validator = partialMeta.value.validator
            const quoted = validator.startsWith("\"")
            return yield* complete(partialSize, (yield* hashOf(partial, crypto.createHash("sha256"))).digest("hex"), {
              etag: quoted ? validator : undefined,
              lastModified: quoted ? undefined : validator
            })
          }
          // The partial file is no prefix of what the server has now: start over.
          yield* cache.removeAll(fs, partial, partialMetaFile)
          return yield* new transfer.Retryable({ reason: "the server refused to resume (416); starting over" })
        }
        if (response.status !== 200 && response.status !== 206) {
          return yield* Effect.zipRight(Effect.ignore(response.text), Effect.fail(statusFailure(url, response)))
        }

        let start = 0
        let total: number | undefined
        const contentLength = response.headers["content-length"]
        if (response.status === 206) {
          const range = parseContentRange(response.headers["content-range"])
          if (range === undefined || range.start !== partialSize) {
            yield* cache.removeAll(fs, partial, partialMetaFile)
            return yield* new transfer.Retryable({ reason: "the server answered a different range; starting over" })
          }
          start = partialSize
          total = range.total
        } else {
          // 200: a new file, or a server that ignores Range: start from byte 0.
          total = contentLength === undefined ? undefined : Number(contentLength)
        }

        const validator = strongEtag(response.headers["etag"]) ?? response.headers["last-modified"]
        if (validator !== undefined) {
          yield* cache.writeJsonAtomic(fs, partialMetaFile, {
            url,
            validator,
            ...(total === undefined ? {} : { total })
          } satisfies PartialMeta)
        } else {
          yield* cache.removeAll(fs, partialMetaFile)
        }

        const hash = crypto.createHash("sha256")
        if (start > 0) {
          // The bytes already there count towards the hash.
          yield* hashOf(partial, hash)
        }
        yield* progress.start(total, start)
        let written = start
        const onBytes = (chunk: Uint8Array) => {
          hash.update(chunk)
          written += chunk.byteLength
        }
        // On Node, the body is piped straight into the file; elsewhere, streamed through Effect.
        const source = nodeDrain.readableOf(response)
        yield* source !== undefined
          ? nodeDrain.drain({
            body: source,
            file: partial,
            flags: start > 0 ? "a" : "w",
            onBytes,
            progress,
            stallTimeout: options.stallTimeout
          })
          : Effect.scoped(Effect.flatMap(
            Effect.mapError(fs.open(partial, { flag: start > 0 ? "a" : "w" }), writeError(partial, "open")),
            (handle) =>
              transfer.drain({
                body: Stream.mapError(response.stream, (error) =>
                  new transfer.Retryable({ reason: `the body was cut off after ${written} bytes (${error.message})` })),
                write: (bytes) => Effect.mapError(handle.writeAll(bytes), writeError(partial, "write")),
                onBytes,
                progress,
                stallTimeout: options.stallTimeout
              })
          ))

        if (total !== undefined && written < total) {
          return yield* new transfer.Retryable({ reason: `the body ended after ${written} of ${total} bytes` })
        }
        if (total !== undefined && written > total) {
          yield* cache.removeAll(fs, partial, partialMetaFile)
          return yield* new transfer.Retryable({ reason: `the body had ${written} bytes, more than the ${total} announced` })
        }
        return yield* complete(written, hash.digest("hex"), {
          etag: strongEtag(response.headers["etag"]),
          lastModified: response.headers["last-modified"]
        })
      })

      return yield* transfer.retrying({
        location: url,
        schedule: options.schedule,
        maxRetryAfter: options.maxRetryAfter,
        attempt
      }).pipe(
        // Interrupted: no staging file is left behind (a killed process leaves
        // one, which the next run resumes).
        Effect.onInterrupt(() => cache.removeAll(fs, partial, partialMetaFile))
      )
    }))
  })
