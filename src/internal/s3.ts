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
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Config from "effect/Config"
import * as crypto from "node:crypto"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import * as StorageError from "../StorageError.js"
import * as cache from "./cache.js"
import * as errors from "./errors.js"
import * as mask_ from "./mask.js"
import * as network from "./network.js"
import * as nodeDrain from "./nodeDrain.js"
import * as transfer from "./transfer.js"

/** @internal */
export interface Settings {
  readonly bucket: string
  readonly prefix: string
  readonly mask: RegExp
  readonly endpoint: string | undefined
  readonly region: string | undefined
  readonly pathStyle: boolean | undefined
  /** The caller's own client (credential providers, handlers, retries): used as it is, never destroyed. */
  readonly client: S3Client | undefined
  readonly caBundle: string | undefined
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
  readonly lockTimeout: Duration.Duration
  readonly verify: cache.VerifyMode
}

/** One object of a snapshot: where it came from and what it was. */
interface Entry {
  readonly key: string
  readonly name: string
  readonly size: number
  readonly etag: string
}

/** One file of a published snapshot: its object, and how it was verified. */
interface Recorded extends Entry {
  readonly digests: ReadonlyArray<string>
  readonly partSize: number
  readonly identity?: cache.Identity | undefined
}

/** What `current.json` says: the complete snapshot now visible. */
interface Manifest {
  readonly version: 2
  readonly snapshot: string
  readonly files: ReadonlyArray<Recorded>
}

/**
 * The resume record of a large object downloaded in ranged parts: the
 * version (ETag, size) and part size it was started with, and the sha256 of
 * each part already on disk (flushed before it was recorded).
 */
interface PartsRecord {
  readonly key: string
  readonly etag: string
  readonly size: number
  readonly partSize: number
  readonly parts: Readonly<Record<string, string>>
}

/** The effect-aws service over one client. */
type S3Service = Effect.Effect.Success<typeof makeS3Service>

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
  // No credentials anywhere in the SDK's chain: no request was sent, and a retry finds none either.
  const name = Predicate.hasProperty(error, "name") ? String(error.name) : ""
  if (name === "CredentialsProviderError" || /Could not load credentials/i.test(message)) {
    return new StorageError.Unauthorized({
      location,
      reason: "no credentials: give access_key_id and secret_access_key, or set AWS_ACCESS_KEY_ID / " +
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role (web identity, container or instance)"
    })
  }
  const tls = network.tlsFailureOf(error)
  if (tls !== undefined) return new StorageError.TlsFailure({ location, code: tls.code, reason: tls.message })
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

/** The keys of one profile of the AWS config file (`AWS_CONFIG_FILE`, else `~/.aws/config`). */
const profileOf = (file: string, profile: string): Record<string, string> => {
  let text: string
  try {
    text = nodeFs.readFileSync(file, "utf8")
  } catch {
    return {}
  }
  const wanted = profile === "default" ? ["default", "profile default"] : [`profile ${profile}`]
  const keys: Record<string, string> = {}
  let inside = false
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, "").trim()
    const section = /^\[\s*(.+?)\s*\]$/.exec(line)
    if (section !== null) {
      inside = wanted.includes(section[1]!)
      continue
    }
    // Top-level keys only (not the nested "s3 =" blocks, which start indented).
    const pair = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line)
    if (inside && pair !== null && !/^\s/.test(raw)) keys[pair[1]!.toLowerCase()] = pair[2]!
  }
  return keys
}

/**
 * Where the client goes, as the AWS CLI and KServe decide it: the endpoint
 * from the kwargs, else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the
 * profile's `endpoint_url` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`); a
 * custom endpoint means path-style addressing. The region from the kwargs,
 * else `AWS_REGION`, the profile's `region`, `AWS_DEFAULT_REGION`, else
 * `us-east-1` for a custom endpoint; none at all is an invalid option.
 *
 * @internal
 */
export const resolveEndpointAndRegion = (settings: Pick<Settings, "endpoint" | "region" | "pathStyle">) =>
  Effect.gen(function*() {
    const env = (name: string) =>
      Effect.map(
        Effect.orElseSucceed(Config.option(Config.string(name)), () => Option.none<string>()),
        Option.filter((value) => value.trim() !== "")
      )
    const configFile = Option.getOrElse(yield* env("AWS_CONFIG_FILE"), () => nodePath.join(os.homedir(), ".aws", "config"))
    const profile = profileOf(configFile, Option.getOrElse(yield* env("AWS_PROFILE"), () => "default"))
    const ignoreConfigured = Option.getOrElse(yield* env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), () => "") === "true"
    const configured = ignoreConfigured ? Option.none<string>() : Option.orElse(
      yield* env("AWS_ENDPOINT_URL_S3"),
      () => Option.orElse(Option.fromNullable(profile["endpoint_url"]), () => Option.none<string>())
    ).pipe((first) => first)
    const endpoint = settings.endpoint ??
      Option.getOrUndefined(configured) ??
      (ignoreConfigured ? undefined : Option.getOrUndefined(yield* env("AWS_ENDPOINT_URL")))
    const region = settings.region ??
      Option.getOrUndefined(yield* env("AWS_REGION")) ??
      profile["region"] ??
      Option.getOrUndefined(yield* env("AWS_DEFAULT_REGION")) ??
      (endpoint !== undefined ? "us-east-1" : undefined)
    if (region === undefined) {
      return yield* new StorageError.InvalidStorageOptions({
        storageType: "s3",
        issues: [
          new StorageError.OptionIssue({
            field: "region",
            problem: "is not set: give region, or set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
          })
        ]
      })
    }
    return { endpoint, region, pathStyle: settings.pathStyle ?? endpoint !== undefined }
  })

/**
 * The S3 storage's work: list, select, fetch into a staged snapshot, publish.
 *
 * @internal
 */
export const make = (settings: Settings) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    // The caller's own client knows its endpoint and region (the cache is keyed by what the kwargs say).
    const resolved = settings.client !== undefined
      ? { endpoint: settings.endpoint, region: settings.region ?? "(the client's)", pathStyle: settings.pathStyle ?? false }
      : yield* resolveEndpointAndRegion(settings)
    const extraCa = settings.caBundle === undefined
      ? []
      : [yield* network.readCaBundle("ca_bundle", path.resolve(settings.caBundle), "s3")]
    // The SDK warns, on every client made under Node 20, that its releases of
    // 2027 will need Node 22. This library supports Node 20 (with the SDK
    // versions that do): the warning is noise to its users, not a fault.
    process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] ??= "true"

    // A client for one load: the caller's (never destroyed here), or one made
    // on agents with the environment's proxies and CAs, destroyed (with its
    // sockets) when the load's scope closes.
    const clientForLoad = Effect.gen(function*() {
      if (settings.client !== undefined) {
        return yield* Effect.provideService(makeS3Service, S3ClientInstance.S3ClientInstance, settings.client)
      }
      const agents = yield* network.agentsFor("s3", extraCa)
      const config: S3ClientConfig = {
        region: resolved.region,
        forcePathStyle: resolved.pathStyle,
        // A bucket in another region than the one configured answers with a redirect: followed.
        followRegionRedirects: true,
        // Retries are the storage's own (one policy, logged, replaceable).
        maxAttempts: 1,
        requestHandler: { httpAgent: agents.http, httpsAgent: agents.https },
        ...(resolved.endpoint === undefined ? {} : { endpoint: resolved.endpoint }),
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
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new S3Client(config)),
        (client) => Effect.sync(() => client.destroy())
      )
      return yield* Effect.provideService(makeS3Service, S3ClientInstance.S3ClientInstance, client)
    })
    const base = `s3://${settings.bucket}/${settings.prefix}`
    const entryDir = path.join(
      settings.cacheDir,
      "s3",
      cache.keyOf(resolved.endpoint ?? "aws", resolved.region, settings.bucket, settings.prefix)
    )
    const manifestFile = path.join(entryDir, "current.json")

    const retrying = <A, E>(location: string, attempt: Effect.Effect<A, E | transfer.Retryable>) =>
      transfer.retrying({ location, schedule: settings.schedule, maxRetryAfter: Duration.minutes(1), attempt })

    // Every key under the prefix, page by page (1,000 keys a page).
    const listAll = (s3: S3Service) => retrying(
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
          if ((yield* mask_.select(settings.mask, [exact.key], { storageType: "s3", field: "file_mask" })).length === 0) {
            return yield* new StorageError.FileDoesNotMatchMask({ path: base, mask: mask_.sourceOf(settings.mask) })
          }
          return [{ ...exact, name: exact.key.split("/").at(-1)! }]
        }
        const folder = settings.prefix === "" || settings.prefix.endsWith("/") ? settings.prefix : `${settings.prefix}/`
        // A name that would leave the cache folder ("..", an empty segment) is never delivered.
        const below = objects
          .filter((object) => object.key.startsWith(folder))
          .map((object) => ({ ...object, name: object.key.slice(folder.length) }))
          .filter((object) => object.name.split("/").every((segment) => segment !== "" && segment !== "." && segment !== ".."))
        const selectedNames = new Set(
          yield* mask_.select(settings.mask, below.map((object) => object.name), { storageType: "s3", field: "file_mask" })
        )
        const matched = below.filter((object) => selectedNames.has(object.name))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        if (matched.length === 0) {
          if (below.length === 0 && objects.length === 0) {
            return yield* new StorageError.RemoteNotFound({ location: base, reason: "no object has this prefix" })
          }
          return yield* new StorageError.NothingMatched({
            folder: `s3://${settings.bucket}/${folder}`,
            mask: mask_.sourceOf(settings.mask),
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

    const partialsDir = path.join(entryDir, "partials")
    const partialOf = (entry: Entry) => {
      const base = path.join(partialsDir, cache.keyOf(entry.key))
      return { data: `${base}.part`, record: `${base}.json` }
    }

    // What a large object's partial file already holds, from an earlier run
    // (killed, interrupted, failed): the parts recorded for this very version,
    // re-hashed. Anything else is removed.
    const resumable = (entry: Entry) =>
      Effect.gen(function*() {
        const { data, record } = partialOf(entry)
        const held = yield* cache.readJson<PartsRecord>(record)
        const info = yield* Effect.option(fs.stat(data))
        if (
          Option.isNone(held) || Option.isNone(info) || held.value.key !== entry.key ||
          held.value.etag !== entry.etag || held.value.size !== entry.size ||
          held.value.partSize !== settings.partSize || Number(info.value.size) !== entry.size
        ) {
          yield* cache.removeAll(data, record)
          return new Map<number, string>()
        }
        // Only the recorded parts are read again (not the rest of a large, mostly missing object).
        const parts = new Map<number, string>()
        for (const [index, digest] of Object.entries(held.value.parts)) {
          const start = Number(index) * settings.partSize
          const length = Math.min(entry.size, start + settings.partSize) - start
          const now = yield* Effect.option(cache.digestOfRange(fs, data, start, length))
          if (Option.isSome(now) && now.value === digest) parts.set(Number(index), digest)
        }
        return parts
      })

    // One object into `target`: one streamed GET (with MD5 checked when the
    // ETag is one), or, when large, parallel ranged GETs pinned to the ETag
    // into a partial file that survives the run (each part recorded once it
    // is flushed), so that a later run fetches only the parts still missing.
    // Succeeds with the sha256 digests of the file, one per part.
    const download = (s3: S3Service, entry: Entry, target: string, tracker: transfer.Tracker) =>
      Effect.gen(function*() {
        const location = `s3://${settings.bucket}/${entry.key}`
        const progress = tracker.file(location, entry.name)
        yield* cache.ensureDir(path.dirname(target))
        const bodyOf = (output: GetObjectCommandOutput) =>
          Stream.fromAsyncIterable(
            output.Body as AsyncIterable<Uint8Array>,
            (cause) => new transfer.Retryable({ reason: `the body was cut off: ${String(cause)}` })
          )
        // One GET of [start, end) (the whole object when end is undefined) into
        // its place in the file, hashed with each of `algorithms`. A retry starts
        // the range over, with fresh hashes.
        const writeRange = (file: string, start: number, end: number | undefined, algorithms: ReadonlyArray<string>) =>
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
            const hashes = algorithms.map((algorithm) => crypto.createHash(algorithm))
            const onBytes = (chunk: Uint8Array) => {
              for (const hash of hashes) hash.update(chunk)
            }
            const flags = end === undefined ? "w" as const : "r+" as const
            const written = nodeDrain.isNodeReadable(output.Body)
              ? yield* nodeDrain.drain({
                body: output.Body,
                file,
                flags,
                start,
                onBytes,
                progress,
                stallTimeout: settings.stallTimeout,
                // A part runs beside others: each holds little (see nodeDrain).
                ...(end === undefined ? {} : { highWaterMark: 64 * 1024 })
              })
              : yield* Effect.flatMap(
                Effect.mapError(fs.open(file, { flag: flags }), errors.writeFailed(file, "open")),
                (handle) =>
                  Effect.zipRight(
                    handle.seek(start, "start"),
                    transfer.drain({
                      body: bodyOf(output),
                      write: (bytes) => Effect.mapError(handle.writeAll(bytes), errors.writeFailed(file, "write")),
                      onBytes,
                      progress,
                      stallTimeout: settings.stallTimeout
                    }).pipe(Effect.zipLeft(Effect.mapError(handle.sync, errors.writeFailed(file, "flush (fsync)"))))
                  )
              )
            const expected = (end ?? entry.size) - start
            if (written !== expected) {
              return yield* new transfer.Retryable({ reason: `got ${written} of ${expected} bytes` })
            }
            return hashes.map((hash) => hash.digest("hex"))
          }))

        if (entry.size < settings.multipartThreshold) {
          yield* progress.start(entry.size, 0)
          const md5 = /^"?[0-9a-f]{32}"?$/.test(entry.etag)
          const [sha256, actual] = yield* retrying(location, writeRange(target, 0, undefined, md5 ? ["sha256", "md5"] : ["sha256"]))
          const expected = entry.etag.replace(/"/g, "")
          if (actual !== undefined && actual !== expected) {
            yield* cache.removeAll(target)
            return yield* new StorageError.ChecksumMismatch({ location, algorithm: "md5 (ETag)", expected, actual })
          }
          yield* progress.finish(entry.size)
          return { digests: [sha256!], partSize: Math.max(1, entry.size) }
        }

        const { data, record } = partialOf(entry)
        const done = yield* resumable(entry)
        const count = Math.ceil(entry.size / settings.partSize)
        if (done.size === 0) {
          // The whole file exists at its size first; each part writes its own range.
          yield* cache.ensureDir(partialsDir)
          yield* Effect.scoped(Effect.flatMap(
            Effect.mapError(fs.open(data, { flag: "w" }), errors.writeFailed(data, "open")),
            (handle) => Effect.mapError(handle.truncate(entry.size), errors.writeFailed(data, "allocate"))
          ))
        } else {
          yield* Effect.logDebug(`Resuming ${location}: ${done.size} of ${count} parts are already in the cache`)
        }
        const partBytes = (i: number) => Math.min(entry.size, (i + 1) * settings.partSize) - i * settings.partSize
        yield* progress.start(entry.size, [...done.keys()].reduce((sum, i) => sum + partBytes(i), 0))
        // Parts are recorded one at a time, each once it is on the device.
        const recordLock = yield* Effect.makeSemaphore(1)
        const writeRecord = Effect.suspend(() =>
          cache.writeJsonAtomic(record, {
            key: entry.key,
            etag: entry.etag,
            size: entry.size,
            partSize: settings.partSize,
            parts: Object.fromEntries([...done].map(([index, sha]) => [String(index), sha]))
          } satisfies PartsRecord)
        )
        const recordPart = (i: number, digest: string) =>
          recordLock.withPermits(1)(Effect.zipRight(Effect.sync(() => done.set(i, digest)), writeRecord))
        if (done.size === 0) yield* writeRecord
        yield* Effect.forEach(
          Array.from({ length: count }, (_, i) => i).filter((i) => !done.has(i)),
          (i) => {
            const start = i * settings.partSize
            const end = Math.min(entry.size, start + settings.partSize)
            return Effect.flatMap(retrying(location, writeRange(data, start, end, ["sha256"])), ([digest]) =>
              recordPart(i, digest!))
          },
          { concurrency: settings.partConcurrency, discard: true }
        )
        const info = yield* Effect.mapError(fs.stat(data), errors.fromPlatformError(data, "stat"))
        if (Number(info.size) !== entry.size) {
          yield* cache.removeAll(data, record)
          return yield* new StorageError.ChecksumMismatch({
            location,
            algorithm: "size",
            expected: String(entry.size),
            actual: String(info.size)
          })
        }
        yield* cache.commit(data, target)
        yield* cache.removeAll(record)
        yield* progress.finish(entry.size)
        return {
          digests: Array.from({ length: count }, (_, i) => done.get(i)!),
          partSize: settings.partSize
        }
      })

    // A file of the current snapshot, checked as the HTTP cache checks its
    // files: re-hashed when its identity changed (or always).
    const check = (file: string, recorded: Recorded) =>
      Effect.either(cache.checkCached(fs, file, recorded, settings.verify))

    const fileOf = (snapshot: string, entry: Entry) => path.join(entryDir, "snapshots", snapshot, ...entry.name.split("/"))
    const readManifest = Effect.map(
      cache.readJson<Manifest>(manifestFile),
      Option.filter((manifest) => manifest.version === 2)
    )
    // The identities of a published snapshot's files, as they are now (after every link and rename).
    const withIdentities = (manifest: Manifest) =>
      Effect.map(
        Effect.forEach(manifest.files, (entry) => cache.identityOf(fileOf(manifest.snapshot, entry))),
        (identities): Manifest => ({
          ...manifest,
          files: manifest.files.map((entry, i) => ({ ...entry, identity: Option.getOrUndefined(identities[i]!) }))
        })
      )

    const load: Effect.Effect<ReadonlyArray<Delivered>, StorageError.StorageError, Scope.Scope> = Effect.gen(function*() {
      const tracker = yield* transfer.makeTracker
      if (settings.offline) {
        const manifest = yield* readManifest
        if (Option.isNone(manifest)) {
          return yield* new StorageError.NotCached({ location: base, cacheDir: settings.cacheDir })
        }
        const kept = new Set(
          yield* mask_.select(settings.mask, manifest.value.files.map((entry) => entry.name), {
            storageType: "s3",
            field: "file_mask"
          })
        )
        const entries = manifest.value.files.filter((entry) => kept.has(entry.name) || entry.key === settings.prefix)
        for (const entry of entries) {
          const file = fileOf(manifest.value.snapshot, entry)
          const checked = yield* check(file, entry)
          if (checked._tag === "Left") {
            return yield* new StorageError.ChecksumMismatch({
              location: `s3://${settings.bucket}/${entry.key} (the cached copy in ${file})`,
              algorithm: "sha256",
              expected: entry.digests.join(","),
              actual: checked.left.actual
            })
          }
          yield* tracker.file(`s3://${settings.bucket}/${entry.key}`, entry.name).cached(entry.size)
        }
        return fromManifest({ ...manifest.value, files: entries })
      }

      const s3 = yield* clientForLoad
      const selected: ReadonlyArray<Entry> = yield* Effect.flatMap(listAll(s3), select)
      yield* cache.ensureDir(entryDir)
      return yield* Effect.scoped(Effect.gen(function*() {
        yield* cache.lock(path.join(entryDir, "lock"), { location: base, timeout: settings.lockTimeout })
        // Staging folders left by a process that died: nobody else holds the lock, so they are orphans.
        const leftovers = (yield* Effect.orElseSucceed(fs.readDirectory(entryDir), () => []))
          .filter((name) => name.startsWith("staging-"))
        yield* cache.removeAll(...leftovers.map((name) => path.join(entryDir, name)))
        // Partial objects of versions no longer selected go; the others are resumed.
        const wanted = new Set(selected.map((entry) => cache.keyOf(entry.key)))
        const partials = yield* Effect.orElseSucceed(fs.readDirectory(partialsDir), () => [])
        yield* cache.removeAll(
          ...partials.filter((name) => !wanted.has(name.replace(/\.(part|json)$/, ""))).map((name) => path.join(partialsDir, name))
        )

        const current = yield* readManifest
        // The files of the current snapshot that are still intact (re-hashed when they changed on disk).
        const intact = new Map<string, Recorded>()
        let rehashed = false
        if (Option.isSome(current)) {
          for (const entry of current.value.files) {
            const file = fileOf(current.value.snapshot, entry)
            const checked = yield* check(file, entry)
            if (checked._tag === "Right") {
              intact.set(entry.key, { ...entry, identity: checked.right.identity })
              rehashed ||= checked.right.rehashed
            } else {
              yield* Effect.logWarning(
                `The cached copy of s3://${settings.bucket}/${entry.key} (${file}) changed on disk ` +
                  `(${checked.left.actual}); fetching it again`
              )
            }
          }
        }
        const unchanged = (entry: Entry) => {
          const before = intact.get(entry.key)
          return before !== undefined && before.etag === entry.etag && before.size === entry.size &&
            before.name === entry.name
        }
        if (Option.isSome(current) && current.value.files.length === selected.length && selected.every(unchanged)) {
          const manifest: Manifest = { ...current.value, files: selected.map((entry) => intact.get(entry.key)!) }
          if (rehashed) yield* Effect.ignore(cache.writeJsonAtomic(manifestFile, manifest))
          for (const entry of manifest.files) {
            yield* tracker.file(`s3://${settings.bucket}/${entry.key}`, entry.name).cached(entry.size)
          }
          return fromManifest(manifest)
        }

        // Room for what is still to fetch (partial objects count for what they hold)?
        const toFetch = selected.filter((entry) => !unchanged(entry))
        const held = yield* Effect.forEach(toFetch, (entry) =>
          Effect.map(cache.readJson<PartsRecord>(partialOf(entry).record), (record) =>
            Option.match(record, {
              onNone: () => 0,
              onSome: (record) =>
                record.etag === entry.etag && record.size === entry.size
                  ? Object.keys(record.parts).length * record.partSize
                  : 0
            })))
        yield* cache.ensureSpace(
          entryDir,
          toFetch.reduce((sum, entry) => sum + entry.size, 0) - held.reduce((sum, bytes) => sum + bytes, 0)
        )

        // A new snapshot: staged whole, then made visible at once.
        const id = `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`
        const staging = path.join(entryDir, `staging-${id}`)
        const snapshot = path.join(entryDir, "snapshots", id)
        yield* cache.ensureDir(staging)
        const stage = Effect.forEach(selected, (entry) => {
          const target = path.join(staging, ...entry.name.split("/"))
          if (unchanged(entry)) {
            // Unchanged since the last snapshot, and intact: linked, not fetched again.
            const before = intact.get(entry.key)!
            const source = fileOf(Option.getOrThrow(current).snapshot, entry)
            return cache.ensureDir(path.dirname(target)).pipe(
              Effect.zipRight(
                Effect.mapError(
                  Effect.orElse(fs.link(source, target), () => fs.copyFile(source, target)),
                  errors.writeFailed(target, "link")
                )
              ),
              Effect.zipRight(tracker.file(`s3://${settings.bucket}/${entry.key}`, entry.name).cached(entry.size)),
              Effect.as<Recorded>(before)
            )
          }
          return Effect.map(download(s3, entry, target, tracker), (verified): Recorded => ({ ...entry, ...verified }))
        }, { concurrency: settings.concurrency })

        const recorded = yield* stage.pipe(
          Effect.zipLeft(cache.ensureDir(path.dirname(snapshot))),
          Effect.zipLeft(Effect.mapError(fs.rename(staging, snapshot), errors.writeFailed(snapshot, "publish"))),
          Effect.zipLeft(cache.sync(path.dirname(snapshot))),
          // An interrupted or failed load leaves the last complete snapshot (and
          // the partial objects, for the next run) and nothing else.
          Effect.onExit(() => cache.removeAll(staging))
        )
        const manifest = yield* withIdentities({ version: 2, snapshot: id, files: recorded })
        yield* cache.writeJsonAtomic(manifestFile, manifest)
        // Older snapshots go; the one just replaced stays, for readers that still use its paths.
        const keep = new Set([id, ...Option.match(current, { onNone: () => [], onSome: (m) => [m.snapshot] })])
        const snapshots = yield* Effect.orElseSucceed(fs.readDirectory(path.join(entryDir, "snapshots")), () => [])
        yield* cache.removeAll(
          ...snapshots.filter((name) => !keep.has(name)).map((name) => path.join(entryDir, "snapshots", name))
        )
        return fromManifest(manifest)
      }))
    })

    return { load, base } as const
  })
