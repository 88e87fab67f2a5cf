import type { GetObjectCommandOutput, S3ClientConfig } from "@aws-sdk/client-s3"
import { S3Client } from "@aws-sdk/client-s3"
import { makeS3Service, S3ClientInstance } from "@effect-aws/client-s3"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import type * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as nodeDrain from "./nodeDrain.js"
import * as transfer from "./transfer.js"

/** @internal */
export interface Settings {
  readonly bucket: string
  readonly prefix: string
  readonly mask: RegExp
  readonly endpoint: string | undefined
  readonly region: string
  readonly pathStyle: boolean
  readonly credentials:
    | {
      readonly accessKeyId: Redacted.Redacted<string>
      readonly secretAccessKey: Redacted.Redacted<string>
      readonly sessionToken: Redacted.Redacted<string> | undefined
    }
    | undefined
  readonly cacheDir: string
  readonly concurrency: number
  readonly partSize: number
  readonly partConcurrency: number
  readonly multipartThreshold: number
  readonly stallTimeout: Duration.Duration
  readonly schedule: Schedule.Schedule<unknown, transfer.Retryable>
  readonly offline: boolean
}

/** One object of a snapshot: where it came from and what it was. */
interface Entry {
  readonly key: string
  readonly name: string
  readonly size: number
  readonly etag: string
}

/** What `current.json` says: the complete snapshot now visible. */
interface Manifest {
  readonly snapshot: string
  readonly files: ReadonlyArray<Entry>
}

/** @internal */
export interface Delivered {
  readonly file: string
  readonly name: string
  readonly size: number
}

const namesShown = 10

/** An S3 client's failure as the library's error: by HTTP status, as S3-compatible stores agree on little else. */
const fromSdk = (location: string) => (error: unknown): StorageError.StorageError | transfer.Retryable => {
  const status = Predicate.hasProperty(error, "$metadata") && Predicate.hasProperty(error.$metadata, "httpStatusCode")
    ? Number(error.$metadata.httpStatusCode)
    : undefined
  const code = Predicate.hasProperty(error, "Code") && typeof error.Code === "string"
    ? error.Code
    : Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" && error._tag !== "SdkError"
    ? error._tag
    : undefined
  const message = Predicate.hasProperty(error, "message") ? String(error.message) : String(error)
  const reason = code === undefined ? message : `${code}: ${message}`
  if (status === 401 || status === 403) {
    return new StorageError.Unauthorized({ location, status, reason })
  }
  if (status === 404 || code === "NoSuchBucket" || code === "NoSuchKey") {
    return new StorageError.RemoteNotFound({ location, ...(status === undefined ? {} : { status }), reason })
  }
  if (status !== undefined && status < 500 && status !== 408 && status !== 429) {
    return new StorageError.RequestRejected({ location, status, reason })
  }
  return new transfer.Retryable({ reason, status })
}

/**
 * The S3 storage's work: list, select, fetch into a staged snapshot, publish.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const config: S3ClientConfig = {
      region: settings.region,
      forcePathStyle: settings.pathStyle,
      // Retries are the storage's own (one policy, logged, replaceable).
      maxAttempts: 1,
      ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
      ...(settings.credentials === undefined ? {} : {
        credentials: {
          accessKeyId: Redacted.value(settings.credentials.accessKeyId),
          secretAccessKey: Redacted.value(settings.credentials.secretAccessKey),
          ...(settings.credentials.sessionToken === undefined
            ? {}
            : { sessionToken: Redacted.value(settings.credentials.sessionToken) })
        }
      })
    }
    const s3 = yield* Effect.provideService(makeS3Service, S3ClientInstance.S3ClientInstance, new S3Client(config))
    const base = `s3://${settings.bucket}/${settings.prefix}`
    const entryDir = path.join(
      settings.cacheDir,
      "s3",
      cache.keyOf(settings.endpoint ?? "aws", settings.region, settings.bucket, settings.prefix)
    )
    const manifestFile = path.join(entryDir, "current.json")

    const retrying = <A, E>(location: string, attempt: Effect.Effect<A, E | transfer.Retryable>) =>
      transfer.retrying({ location, schedule: settings.schedule, maxRetryAfter: Duration.minutes(1), attempt })

    // Every key under the prefix, page by page (1,000 keys a page).
    const listAll = retrying(
      base,
      Effect.gen(function*() {
        const objects: Array<{ key: string; size: number; etag: string }> = []
        let token: string | undefined
        do {
          const page = yield* Effect.mapError(
            s3.listObjectsV2({
              Bucket: settings.bucket,
              ...(settings.prefix === "" ? {} : { Prefix: settings.prefix }),
              ...(token === undefined ? {} : { ContinuationToken: token })
            }),
            fromSdk(base)
          )
          for (const object of page.Contents ?? []) {
            if (object.Key !== undefined && !object.Key.endsWith("/")) {
              objects.push({ key: object.Key, size: Number(object.Size ?? 0), etag: object.ETag ?? "" })
            }
          }
          token = page.IsTruncated ? page.NextContinuationToken : undefined
        } while (token !== undefined)
        return objects
      })
    )

    // As the Disk storage: a prefix that is itself a key is a single file, the
    // mask searched in its key; else a folder, the mask searched in each name
    // below it (a key relative to the prefix).
    const select = (objects: ReadonlyArray<{ key: string; size: number; etag: string }>) =>
      Effect.gen(function*() {
        const exact = objects.find((object) => object.key === settings.prefix)
        if (exact !== undefined && settings.prefix !== "") {
          if (!settings.mask.test(exact.key)) {
            return yield* new StorageError.FileDoesNotMatchMask({ path: base, mask: settings.mask.source })
          }
          return [{ ...exact, name: exact.key.split("/").at(-1)! }]
        }
        const folder = settings.prefix === "" || settings.prefix.endsWith("/") ? settings.prefix : `${settings.prefix}/`
        // A name that would leave the cache folder ("..", an empty segment) is never delivered.
        const below = objects
          .filter((object) => object.key.startsWith(folder))
          .map((object) => ({ ...object, name: object.key.slice(folder.length) }))
          .filter((object) => object.name.split("/").every((segment) => segment !== "" && segment !== "." && segment !== ".."))
        const matched = below.filter((object) => settings.mask.test(object.name))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        if (matched.length === 0) {
          if (below.length === 0 && objects.length === 0) {
            return yield* new StorageError.RemoteNotFound({ location: base, reason: "no object has this prefix" })
          }
          return yield* new StorageError.NothingMatched({
            folder: `s3://${settings.bucket}/${folder}`,
            mask: settings.mask.source,
            names: below.map((object) => object.name).sort().slice(0, namesShown),
            entries: below.length
          })
        }
        return matched
      })

    const fromManifest = (manifest: Manifest): ReadonlyArray<Delivered> =>
      manifest.files.map((entry) => ({
        file: path.join(entryDir, "snapshots", manifest.snapshot, ...entry.name.split("/")),
        name: entry.name,
        size: entry.size
      }))

    // One object into `target`: one streamed GET (with MD5 checked when the
    // ETag is one), or, when large, parallel ranged GETs pinned to the ETag.
    const download = (entry: Entry, target: string, tracker: transfer.Tracker) =>
      Effect.gen(function*() {
        const location = `s3://${settings.bucket}/${entry.key}`
        const progress = tracker.file(location, entry.name)
        yield* cache.ensureDir(fs, path.dirname(target))
        yield* progress.start(entry.size, 0)
        const bodyOf = (output: GetObjectCommandOutput) =>
          Stream.fromAsyncIterable(
            output.Body as AsyncIterable<Uint8Array>,
            (cause) => new transfer.Retryable({ reason: `the body was cut off: ${String(cause)}` })
          )
        // One GET of [start, end) (the whole object when end is undefined) into
        // its place in the file. A retry starts the range over, with a fresh hash.
        const writeRange = (start: number, end: number | undefined, hashWith?: string) =>
          Effect.scoped(Effect.gen(function*() {
            const output = yield* Effect.mapError(
              s3.getObject({
                Bucket: settings.bucket,
                Key: entry.key,
                IfMatch: entry.etag,
                ...(end === undefined ? {} : { Range: `bytes=${start}-${end - 1}` })
              }),
              fromSdk(location)
            )
            // Servers that ignore If-Match are caught here: every part must come from the listed version.
            if (output.ETag !== undefined && entry.etag !== "" && output.ETag !== entry.etag) {
              return yield* new StorageError.ChecksumMismatch({
                location,
                algorithm: "ETag (the object changed during the load: load again)",
                expected: entry.etag,
                actual: output.ETag
              })
            }
            const hash = hashWith === undefined ? undefined : crypto.createHash(hashWith)
            const onBytes = (chunk: Uint8Array) => hash?.update(chunk)
            const flags = end === undefined ? "w" as const : "r+" as const
            const written = nodeDrain.isNodeReadable(output.Body)
              ? yield* nodeDrain.drain({
                body: output.Body,
                file: target,
                flags,
                start,
                onBytes,
                progress,
                stallTimeout: settings.stallTimeout,
                // A part runs beside others: each holds little (see nodeDrain).
                ...(end === undefined ? {} : { highWaterMark: 64 * 1024 })
              })
              : yield* Effect.flatMap(
                Effect.mapError(fs.open(target, { flag: flags }), errors.writeFailed(target, "open")),
                (handle) =>
                  Effect.zipRight(
                    handle.seek(start, "start"),
                    transfer.drain({
                      body: bodyOf(output),
                      write: (bytes) => Effect.mapError(handle.writeAll(bytes), errors.writeFailed(target, "write")),
                      onBytes,
                      progress,
                      stallTimeout: settings.stallTimeout
                    })
                  )
              )
            const expected = (end ?? entry.size) - start
            if (written !== expected) {
              return yield* new transfer.Retryable({ reason: `got ${written} of ${expected} bytes` })
            }
            return hash?.digest("hex")
          }))

        if (entry.size < settings.multipartThreshold) {
          const md5 = /^"?[0-9a-f]{32}"?$/.test(entry.etag)
          const actual = yield* retrying(location, writeRange(0, undefined, md5 ? "md5" : undefined))
          const expected = entry.etag.replace(/"/g, "")
          if (actual !== undefined && actual !== expected) {
            yield* cache.removeAll(fs, target)
            return yield* new StorageError.ChecksumMismatch({ location, algorithm: "md5 (ETag)", expected, actual })
          }
        } else {
          // The whole file exists at its size first; each part writes its own range.
          yield* Effect.scoped(Effect.flatMap(
            Effect.mapError(fs.open(target, { flag: "w" }), errors.writeFailed(target, "open")),
            (handle) => Effect.mapError(handle.truncate(entry.size), errors.writeFailed(target, "allocate"))
          ))
          const parts = Math.ceil(entry.size / settings.partSize)
          yield* Effect.forEach(
            Array.from({ length: parts }, (_, i) => i),
            (i) => {
              const start = i * settings.partSize
              const end = Math.min(entry.size, start + settings.partSize)
              return retrying(location, writeRange(start, end))
            },
            { concurrency: settings.partConcurrency, discard: true }
          )
        }
        const info = yield* Effect.mapError(fs.stat(target), errors.fromPlatformError(target, "stat"))
        if (Number(info.size) !== entry.size) {
          return yield* new StorageError.ChecksumMismatch({
            location,
            algorithm: "size",
            expected: String(entry.size),
            actual: String(info.size)
          })
        }
        yield* progress.finish(entry.size)
      })

    const load: Effect.Effect<ReadonlyArray<Delivered>, StorageError.StorageError> = Effect.gen(function*() {
      const tracker = yield* transfer.makeTracker
      if (settings.offline) {
        const manifest = yield* cache.readJson<Manifest>(fs, manifestFile)
        if (Option.isNone(manifest)) {
          return yield* new StorageError.NotCached({ location: base, cacheDir: settings.cacheDir })
        }
        const files = fromManifest({
          ...manifest.value,
          files: manifest.value.files.filter((entry) => settings.mask.test(entry.name) || entry.key === settings.prefix)
        })
        for (const file of files) yield* tracker.file(`s3://${settings.bucket}/${file.name}`, file.name).cached(file.size)
        return files
      }

      const selected: ReadonlyArray<Entry> = yield* Effect.flatMap(listAll, select)
      yield* cache.ensureDir(fs, entryDir)
      return yield* Effect.scoped(Effect.gen(function*() {
        yield* cache.lock(fs, path.join(entryDir, "lock"), base)
        // Staging folders left by a process that died: nobody else holds the lock, so they are orphans.
        const leftovers = (yield* Effect.orElseSucceed(fs.readDirectory(entryDir), () => []))
          .filter((name) => name.startsWith("staging-"))
        yield* cache.removeAll(fs, ...leftovers.map((name) => path.join(entryDir, name)))

        const current = yield* cache.readJson<Manifest>(fs, manifestFile)
        const previous = new Map(
          Option.match(current, { onNone: () => [], onSome: (manifest) => manifest.files })
            .map((entry) => [entry.key, { entry, snapshot: Option.getOrThrow(current).snapshot }])
        )
        const unchanged = (entry: Entry) => {
          const before = previous.get(entry.key)
          return before !== undefined && before.entry.etag === entry.etag && before.entry.size === entry.size &&
            before.entry.name === entry.name
        }
        if (Option.isSome(current) && current.value.files.length === selected.length && selected.every(unchanged)) {
          const files = fromManifest(current.value)
          for (const [i, file] of files.entries()) {
            yield* tracker.file(`s3://${settings.bucket}/${selected[i]!.key}`, file.name).cached(file.size)
          }
          return files
        }

        // A new snapshot: staged whole, then made visible at once.
        const id = `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`
        const staging = path.join(entryDir, `staging-${id}`)
        const snapshot = path.join(entryDir, "snapshots", id)
        yield* cache.ensureDir(fs, staging)
        const staged = Effect.forEach(selected, (entry) => {
          const target = path.join(staging, ...entry.name.split("/"))
          const before = previous.get(entry.key)
          if (before !== undefined && unchanged(entry)) {
            // Unchanged since the last snapshot: linked, not fetched again.
            const source = path.join(entryDir, "snapshots", before.snapshot, ...entry.name.split("/"))
            return cache.ensureDir(fs, path.dirname(target)).pipe(
              Effect.zipRight(
                Effect.mapError(
                  Effect.orElse(fs.link(source, target), () => fs.copyFile(source, target)),
                  errors.writeFailed(target, "link")
                )
              ),
              Effect.zipRight(tracker.file(`s3://${settings.bucket}/${entry.key}`, entry.name).cached(entry.size))
            )
          }
          return download(entry, target, tracker)
        }, { concurrency: settings.concurrency, discard: true })

        yield* staged.pipe(
          Effect.zipRight(cache.ensureDir(fs, path.dirname(snapshot))),
          Effect.zipRight(Effect.mapError(fs.rename(staging, snapshot), errors.writeFailed(snapshot, "publish"))),
          // An interrupted or failed load leaves the last complete snapshot and nothing else.
          Effect.onExit(() => cache.removeAll(fs, staging))
        )
        const manifest: Manifest = { snapshot: id, files: selected }
        yield* cache.writeJsonAtomic(fs, manifestFile, manifest)
        // Older snapshots go; the one just replaced stays, for readers that still use its paths.
        const keep = new Set([id, ...Option.match(current, { onNone: () => [], onSome: (m) => [m.snapshot] })])
        const snapshots = yield* Effect.orElseSucceed(fs.readDirectory(path.join(entryDir, "snapshots")), () => [])
        yield* cache.removeAll(
          fs,
          ...snapshots.filter((name) => !keep.has(name)).map((name) => path.join(entryDir, "snapshots", name))
        )
        return fromManifest(manifest)
      }))
    })

    return { load, base } as const
  })
