import { expect, layer } from "@effect/vitest"
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as MemoryBudget from "../src/MemoryBudget.js"
import * as Progress from "../src/Progress.js"
import * as s3Internal from "../src/internal/s3.js"
import * as S3Storage from "../src/S3Storage.js"
import * as Storage from "../src/Storage.js"
import { storageContract } from "../src/Testing.js"
import { archiveOf, budgetAfterFailure, intoMemoryInParts, bytesOf, contents, filesUnder, fingerprint, checkpointed, eachPartAtLeast, partsRecords, platform, runSelectionChild, tempDir, flipByte, onSmallDisk, untilCheckpointed } from "./helpers.js"
import * as S3 from "./servers/s3.js"
import { followsItsSource } from "./watching.js"

const quiet = Logger.minimumLogLevel(LogLevel.Error)
const env = Layer.merge(platform, quiet)
const withServer = layer(env, { excludeTestServices: true })
const keys = { accessKeyId: S3.accessKeyId, secretAccessKey: S3.secretAccessKey }
const model = bytesOf(2 * 1024 * 1024 + 5, 3)
const weights = bytesOf(70_000, 4)


const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const server = yield* S3.make(["models"])
    yield* Effect.promise(() => server.put("models", "iris/model.onnx", model))
    yield* Effect.promise(() => server.put("models", "iris/weights.bin", weights))
    yield* Effect.promise(() => server.put("models", "iris/README.md", "not a model"))
    const cacheDir = yield* tempDir
    return {
      layer: Storage.layerFromSelection({
        storage_type: "s3",
        storage_kwargs: {
          bucket: "models",
          path_to_files: "iris",
          file_mask: String.raw`\.(onnx|bin)$`,
          endpoint: server.endpoint,
          access_key_id: S3.accessKeyId,
          secret_access_key: S3.secretAccessKey,
          cache_dir: cacheDir,
          need_load_file: needLoadFile,
          cache
        }
      }).pipe(Layer.provide(env)),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: model },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "weights.bin", content: weights }
      ]
    }
  })

storageContract("S3Storage (paths)", fixture(false))
// SageMaker's convention: a model.tar.gz on S3, unpacked; the mask selects among its files.
storageContract("S3Storage (a SageMaker model.tar.gz, unpacked, paths)", Effect.gen(function*() {
  const server = yield* S3.make(["models"])
  const archive = yield* archiveOf("tar.gz", { "model.onnx": model, "weights.bin": weights, "code/inference.py": "print(1)" })
  yield* Effect.promise(() => server.put("models", "job-1/output/model.tar.gz", archive))
  return {
    layer: Storage.layerFromSelection({
      storage_type: "s3",
      storage_kwargs: {
        storage_uri: "s3://models/job-1/output/model.tar.gz",
        file_mask: String.raw`\.(onnx|bin)$`,
        unpack: "auto",
        endpoint: server.endpoint,
        access_key_id: S3.accessKeyId,
        secret_access_key: S3.secretAccessKey,
        cache_dir: yield* tempDir
      }
    }).pipe(Layer.provide(env)),
    expected: [
      { _tag: "Path" as const, name: "model.onnx", content: model },
      { _tag: "Path" as const, name: "weights.bin", content: weights }
    ]
  }
}))
storageContract("S3Storage (bytes)", fixture(true))
storageContract("S3Storage (straight into memory, cache: false)", fixture(true, false))

withServer("S3Storage: resume after SIGKILL", (it) => {
  it.scoped("parts killed with SIGKILL mid-way: each resumes from its last flushed, recorded bytes; nothing recorded is fetched again", () =>
    Effect.scoped(Effect.gen(function*() {
      // Every GET of the object stops at half its range (the connection stays open).
      const stalled = new Set(["m/big.bin"])
      const server = yield* S3.make(["b"], { stalled })
      const big = bytesOf(16 * 1024 * 1024, 41)
      yield* Effect.promise(() => server.put("b", "m/big.bin", big))
      const cacheDir = yield* tempDir
      const kwargs = {
        bucket: "b",
        prefix: "m/big.bin",
        file_mask: "bin$",
        endpoint: server.endpoint,
        access_key_id: S3.accessKeyId,
        secret_access_key: S3.secretAccessKey,
        cache_dir: cacheDir,
        multipart_threshold_mb: 4,
        part_size_mb: 4,
        part_concurrency: 4
      }
      const first = runSelectionChild({ storage_type: "s3", storage_kwargs: kwargs })
      // Checkpoints every MiB (a quarter of a part): each part has 2 MiB when it stops.
      yield* untilCheckpointed(cacheDir, eachPartAtLeast(4, 1024 * 1024))
      first.child.kill("SIGKILL")
      expect(yield* Effect.promise(() => first.done)).toEqual({ signal: "SIGKILL" })
      const kept = checkpointed(cacheDir)
      stalled.clear()
      const before = server.gets("big.bin").length
      const delivered = yield* contents(yield* S3Storage.make({
        bucket: "b",
        prefix: "m/big.bin",
        fileMask: "bin$",
        endpoint: server.endpoint,
        ...keys,
        cacheDir,
        multipartThresholdMb: 4,
        partSizeMb: 4
      }))
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(big)])
      const part = 4 * 1024 * 1024
      expect(server.gets("big.bin").slice(before).map((entry) => entry.range).sort()).toEqual(
        [0, 1, 2, 3].map((i) => `bytes=${i * part + kept[String(i)]!}-${(i + 1) * part - 1}`).sort()
      )
      expect(partsRecords(cacheDir)).toEqual([])
    })), 60_000)
})

withServer("S3Storage: straight into memory (cache: false)", (it) => {
  const big = bytesOf(3 * 1024 * 1024 + 100, 11)
  const withBig = (answers?: S3.Answers) =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"], answers)
      yield* Effect.promise(() => server.put("b", "m/big.onnx", big))
      yield* Effect.promise(() => server.put("b", "m/small.bin", weights))
      return server
    })
  const inMemory = (server: S3.TestS3Server, cacheDir: string, options: Partial<S3Storage.Options> = {}) =>
    S3Storage.make({
      bucket: "b",
      prefix: "m/",
      fileMask: ".",
      endpoint: server.endpoint,
      ...keys,
      cacheDir,
      ...intoMemoryInParts,
      ...options
    })

  it.scoped("parallel ranged GETs straight into one buffer: nothing on disk, the budget taken and given back", () =>
    Effect.gen(function*() {
      const server = yield* withBig()
      const cacheDir = yield* tempDir
      const budget = yield* MemoryBudget.make({ bytes: 8 * 1024 * 1024 })
      const storage = yield* inMemory(server, cacheDir)
      const seen = yield* Effect.scoped(Effect.gen(function*() {
        const files = yield* storage.load
        const held = yield* budget.available
        return {
          files: files.map((file) =>
            file._tag === "Bytes" ? { tag: file._tag, path: file.path, name: file.name, bytes: fingerprint(file.bytes) } : file
          ),
          held,
          buffers: files.map((file) => (file._tag === "Bytes" ? file.bytes.buffer : undefined))
        }
      }).pipe(Effect.provideService(MemoryBudget.MemoryBudget, budget)))
      expect(seen.files).toEqual([
        { tag: "Bytes", path: "s3://b/m/big.onnx", name: "big.onnx", bytes: fingerprint(big) },
        { tag: "Bytes", path: "s3://b/m/small.bin", name: "small.bin", bytes: fingerprint(weights) }
      ])
      // One buffer each, of the file's size (its own ArrayBuffer, detached when the scope closed).
      expect(seen.buffers.map((buffer) => buffer?.byteLength)).toEqual([0, 0])
      expect(seen.held).toBe(8 * 1024 * 1024 - big.byteLength - weights.byteLength)
      expect(yield* budget.available).toBe(8 * 1024 * 1024)
      expect(filesUnder(cacheDir)).toEqual([])
      expect(server.gets("big.onnx").map((entry) => entry.range).sort()).toEqual([
        "bytes=0-1048575",
        "bytes=1048576-2097151",
        "bytes=2097152-3145727",
        "bytes=3145728-3145827"
      ])
    }))

  it.scoped("a digest that does not match (whole and in parts) is ChecksumMismatch, and the buffers and budget go back at once", () =>
    Effect.gen(function*() {
      const server = yield* withBig({ otherEtags: true })
      for (const threshold of [1, 64]) {
        const storage = yield* inMemory(server, yield* tempDir, { multipartThresholdMb: threshold, concurrency: 1 })
        const { error, stillTaken } = yield* budgetAfterFailure(storage)
        expect(error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "md5 (ETag)", location: "s3://b/m/big.onnx" })
        expect(stillTaken).toBe(0)
      }
    }))

  it.scoped("interrupted mid-part: the budget goes back at once, nothing is left on disk", () =>
    Effect.gen(function*() {
      const server = yield* withBig({ stalled: new Set(["m/big.onnx"]) })
      const cacheDir = yield* tempDir
      const storage = yield* inMemory(server, cacheDir, { partConcurrency: 2 })
      const { heldBefore, stillTaken } = yield* budgetAfterFailure(storage, Effect.sync(() => server.gets("big.onnx").length >= 2))
      expect(heldBefore).toBeGreaterThanOrEqual(big.byteLength)
      expect(stillTaken).toBe(0)
      expect(filesUnder(cacheDir)).toEqual([])
    }))

  it.effect("cache: false needs need_load_file: true, and cannot go with offline", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(S3Storage.make({ bucket: "b", endpoint: "http://127.0.0.1:1", ...keys, cache: false, offline: true }))
      expect(error._tag).toBe("InvalidStorageOptions")
      expect(error.issues.map((issue) => issue.field)).toEqual(["cache", "offline"])
      expect(error.message).toContain("need_load_file: true")
    }))
})

withServer("S3Storage: listing and masks", (it) => {
  it.scoped("more than 1,000 keys: every page is listed", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["many"])
      const names = Array.from({ length: 1005 }, (_, i) => `f${String(i).padStart(4, "0")}.txt`)
      yield* Effect.forEach(names, (name) => Effect.promise(() => server.put("many", `set/${name}`, name)), {
        concurrency: 32,
        discard: true
      })
      const cacheDir = yield* tempDir
      const storage = yield* S3Storage.make({
        bucket: "many",
        prefix: "set/",
        fileMask: String.raw`^f100[0-4]\.txt$`,
        endpoint: server.endpoint,
        ...keys,
        cacheDir
      })
      const files = yield* contents(storage)
      expect(files.map((file) => file.name)).toEqual(["f1000.txt", "f1001.txt", "f1002.txt", "f1003.txt", "f1004.txt"])
      expect(server.log.filter((entry) => entry.url.includes("list-type=2")).length).toBe(2)
    }), 60_000)

  it.scoped("the Disk storage's semantics: a single key, a key that does not match, nothing matched, nested names", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/model.pckl", "pickle"))
      yield* Effect.promise(() => server.put("b", "m/notes.txt", "notes"))
      yield* Effect.promise(() => server.put("b", "m/sub/part.pckl", "part"))
      const cacheDir = yield* tempDir
      const make = (prefix: string, fileMask?: string) =>
        S3Storage.make({ bucket: "b", prefix, endpoint: server.endpoint, ...keys, cacheDir, ...(fileMask ? { fileMask } : {}) })

      // The default mask (mlup's), in each name below the prefix; nested keys keep their relative name.
      expect((yield* contents(yield* make("m"))).map((file) => file.name)).toEqual(["model.pckl", "sub/part.pckl"])
      // A prefix that is a key: a single file, the mask searched in its key.
      expect((yield* contents(yield* make("m/notes.txt", "txt$"))).map((file) => file.name)).toEqual(["notes.txt"])
      const mismatch = yield* Effect.flip(contents(yield* make("m/notes.txt", "onnx$")))
      expect(mismatch).toMatchObject({ _tag: "FileDoesNotMatchMask", path: "s3://b/m/notes.txt", mask: "onnx$" })
      const nothing = yield* Effect.flip(contents(yield* make("m/", String.raw`\.onnx$`)))
      expect(nothing).toMatchObject({ _tag: "NothingMatched", folder: "s3://b/m/", mask: String.raw`\.onnx$`, entries: 3 })
      if (nothing._tag === "NothingMatched") expect(nothing.names).toEqual(["model.pckl", "notes.txt", "sub/part.pckl"])
      const missing = yield* Effect.flip(contents(yield* make("absent/")))
      expect(missing._tag).toBe("RemoteNotFound")
    }))

  it.scoped("an unknown access key is Unauthorized, a missing bucket RemoteNotFound; secrets never shown", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      const cacheDir = yield* tempDir
      const denied = yield* Effect.flip(Effect.flatMap(
        S3Storage.make({
          bucket: "b",
          endpoint: server.endpoint,
          accessKeyId: "NOBODY",
          secretAccessKey: "very-secret-key",
          cacheDir,
          retries: 0
        }),
        contents
      ))
      expect(denied).toMatchObject({ _tag: "Unauthorized", status: 403 })
      expect(denied.message).toContain("InvalidAccessKeyId")
      expect(JSON.stringify(denied) + denied.message).not.toContain("very-secret-key")
      const noBucket = yield* Effect.flip(Effect.flatMap(
        S3Storage.make({ bucket: "nope", endpoint: server.endpoint, ...keys, cacheDir }),
        contents
      ))
      expect(noBucket).toMatchObject({ _tag: "RemoteNotFound", location: "s3://nope/" })
      expect(noBucket.message).toContain("NoSuchBucket")
    }))
})

withServer("S3Storage: encrypted objects and the object's own checksums", (it) => {
  const sha256Base64 = (bytes: Uint8Array) => crypto.createHash("sha256").update(bytes).digest("base64")
  const load = (server: S3.TestS3Server, options: Partial<S3Storage.Options> = {}) =>
    Effect.flatMap(
      S3Storage.make({ bucket: "b", prefix: "m/", fileMask: ".", endpoint: server.endpoint, ...keys, cacheDir: "", retries: 0, ...options }),
      contents
    )
  const withObjects = (answers: S3.Answers) =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"], answers)
      yield* Effect.promise(() => server.put("b", "m/model.onnx", model))
      yield* Effect.promise(() => server.put("b", "m/weights.bin", weights))
      return server
    })
  const expected = [fingerprint(model), fingerprint(weights)]

  it.scoped("SSE-KMS, DSSE-KMS and SSE-C: the ETag is no MD5, and is not taken for one (whole and in parts)", () =>
    Effect.gen(function*() {
      for (const encryption of ["aws:kms", "aws:kms:dsse", "sse-c", "AES256"] as const) {
        const server = yield* withObjects({ encryption })
        const whole = yield* load(server, { cacheDir: yield* tempDir })
        expect(whole.map((file) => file.bytes), encryption).toEqual(expected)
        const inParts = yield* load(server, { cacheDir: yield* tempDir, multipartThresholdMb: 1, partSizeMb: 1 })
        expect(inParts.map((file) => file.bytes), encryption).toEqual(expected)
      }
    }))

  it.scoped("a plain object's ETag is its MD5, and is checked: an ETag that is not, with nothing saying so, fails", () =>
    Effect.gen(function*() {
      const server = yield* withObjects({ otherEtags: true })
      for (const options of [{}, { multipartThresholdMb: 1, partSizeMb: 1 }]) {
        const error = yield* Effect.flip(load(server, { cacheDir: yield* tempDir, ...options }))
        expect(error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "md5 (ETag)" })
      }
    }))

  it.scoped("the object's own sha256 (x-amz-checksum-sha256) is checked, in place of the ETag", () =>
    Effect.gen(function*() {
      const right = yield* withObjects({
        encryption: "aws:kms",
        sha256: new Map([["m/model.onnx", sha256Base64(model)], ["m/weights.bin", sha256Base64(weights)]])
      })
      expect((yield* load(right, { cacheDir: yield* tempDir })).map((file) => file.bytes)).toEqual(expected)
      // Preferred to the ETag: with a checksum given, a plain object's non-MD5 ETag is not checked.
      const preferred = yield* withObjects({
        otherEtags: true,
        sha256: new Map([["m/model.onnx", sha256Base64(model)], ["m/weights.bin", sha256Base64(weights)]])
      })
      expect((yield* load(preferred, { cacheDir: yield* tempDir })).map((file) => file.bytes)).toEqual(expected)
      // Asked for on whole-object GETs; a checksum that does not match is a ChecksumMismatch, the file not kept.
      expect(right.gets().every((entry) => entry.headers["x-amz-checksum-mode"] === "ENABLED")).toBe(true)
      const wrong = yield* withObjects({
        encryption: "aws:kms",
        sha256: new Map([["m/model.onnx", sha256Base64(weights)], ["m/weights.bin", sha256Base64(weights)]])
      })
      const cacheDir = yield* tempDir
      const refused = yield* Effect.flip(load(wrong, { cacheDir }))
      expect(refused).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256 (x-amz-checksum-sha256)", location: "s3://b/m/model.onnx" })
      expect(filesUnder(cacheDir).filter((file) => file.endsWith("model.onnx"))).toEqual([])
      expect(s3Internal.vouchedBy({ ETag: "\"" + "a".repeat(32) + "\"", ChecksumSHA256: sha256Base64(model) }, true))
        .toEqual([{ algorithm: "sha256", label: "sha256 (x-amz-checksum-sha256)", expected: crypto.createHash("sha256").update(model).digest("hex") }])
      // A composite checksum (of a multipart upload's parts) and a ranged answer's are no digest of the object.
      expect(s3Internal.vouchedBy({ ETag: "\"x-2\"", ChecksumSHA256: "abc=", ChecksumType: "COMPOSITE" }, true)).toEqual([])
      expect(s3Internal.vouchedBy({ ETag: "\"x-2\"", ChecksumSHA256: sha256Base64(model) }, false)).toEqual([])
    }))
})

withServer("S3Storage: cache and snapshots", (it) => {
  it.scoped("keyed by ETag: unchanged objects are not fetched again; a changed one is, into a new snapshot", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/a.bin", model))
      yield* Effect.promise(() => server.put("b", "m/b.bin", weights))
      const cacheDir = yield* tempDir
      const storage = yield* S3Storage.make({ bucket: "b", prefix: "m", fileMask: "bin$", endpoint: server.endpoint, ...keys, cacheDir })
      const first = yield* contents(storage)
      expect(server.gets().length).toBe(2)
      const second = yield* contents(storage)
      expect(server.gets().length).toBe(2)
      expect(second).toEqual(first)

      yield* Effect.promise(() => server.put("b", "m/b.bin", "new weights"))
      const third = yield* contents(storage)
      expect(server.gets("b.bin").length).toBe(2)
      expect(server.gets("a.bin").length).toBe(1)
      expect(third.map((file) => file.bytes)).toEqual([fingerprint(model), fingerprint(new TextEncoder().encode("new weights"))])
      // The previous snapshot stays (a reader may still use its paths); the files of the first are intact.
      expect(fs.readFileSync(first[1]!.path).byteLength).toBe(weights.byteLength)
      expect(third[0]!.path).not.toBe(first[0]!.path)

      yield* Effect.promise(() => server.put("b", "m/b.bin", "newer weights"))
      yield* contents(storage)
      // Two snapshots at most: the first is gone now.
      expect(fs.existsSync(first[0]!.path)).toBe(false)
    }))

  it.scoped("a cached file changed on disk: re-hashed, fetched again online, a typed error offline (also for ranged parts)", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      const large = bytesOf(3 * 1024 * 1024 + 11, 8)
      yield* Effect.promise(() => server.put("b", "m/a.bin", model))
      yield* Effect.promise(() => server.put("b", "m/large.bin", large))
      const cacheDir = yield* tempDir
      const options = {
        bucket: "b",
        prefix: "m",
        fileMask: "bin$",
        endpoint: server.endpoint,
        ...keys,
        cacheDir,
        multipartThresholdMb: 2,
        partSizeMb: 1
      }
      const first = yield* contents(yield* S3Storage.make(options))
      const gets = server.gets().length
      for (const file of first) flipByte(file.path, 2 * 1024 * 1024 + 1)
      const again = yield* contents(yield* S3Storage.make(options))
      expect(again.map((file) => file.bytes)).toEqual([fingerprint(model), fingerprint(large)])
      // Both fetched again, in their 1 MiB parts (3 and 4), not taken from the cache.
      expect(server.gets().length - gets).toBe(3 + 4)

      const [tampered] = again
      flipByte(tampered!.path, 2 * 1024 * 1024 + 1)
      const error = yield* Effect.flip(contents(yield* S3Storage.make({ ...options, offline: true })))
      expect(error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "sha256" })
      expect(error.message).toContain(tampered!.path)
    }))

  it.scoped("a full disk: too little space for the objects is InsufficientSpace before any GET; what fits is fetched", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/big.bin", bytesOf(3 * 1024 * 1024, 41)))
      yield* Effect.promise(() => server.put("b", "m/small.bin", bytesOf(100 * 1024, 42)))
      const cacheDir = yield* tempDir
      const disk = yield* onSmallDisk(cacheDir)
      const load = (fileMask: string) =>
        disk.load({
          storage_type: "s3",
          storage_kwargs: { bucket: "b", prefix: "m", file_mask: fileMask, endpoint: server.endpoint, access_key_id: S3.accessKeyId, secret_access_key: S3.secretAccessKey, retries: 0 }
        })
      const refused = yield* load("bin$")
      expect(refused.error).toMatchObject({ _tag: "InsufficientSpace", needed: 3 * 1024 * 1024 + 100 * 1024 })
      expect(refused.error.available).toBeLessThanOrEqual(1024 * 1024)
      expect(server.gets()).toEqual([])
      const small = yield* load("small")
      expect(small.files).toEqual([{ name: "small.bin", size: 100 * 1024 }])
    }), 60_000)

  it.scoped("large objects: parallel ranged GETs", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      const big = bytesOf(3 * 1024 * 1024 + 100, 11)
      yield* Effect.promise(() => server.put("b", "m/big.onnx", big))
      const cacheDir = yield* tempDir
      const storage = yield* S3Storage.make({
        bucket: "b",
        prefix: "m/big.onnx",
        fileMask: "onnx$",
        endpoint: server.endpoint,
        ...keys,
        cacheDir,
        multipartThresholdMb: 1,
        partSizeMb: 1
      })
      expect((yield* contents(storage))[0]!.bytes).toBe(fingerprint(big))
      expect(server.gets("big.onnx").map((entry) => entry.range).sort()).toEqual([
        "bytes=0-1048575",
        "bytes=1048576-2097151",
        "bytes=2097152-3145727",
        "bytes=3145728-3145827"
      ])
    }))

  it.scoped("all or nothing: an object that changes during the load fails it, and the previous snapshot stays", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/a.bin", "a-1"))
      yield* Effect.promise(() => server.put("b", "m/b.bin", "b-1"))
      const cacheDir = yield* tempDir
      const options = { bucket: "b", prefix: "m", fileMask: "bin$", endpoint: server.endpoint, ...keys, cacheDir, concurrency: 1 }
      const good = yield* contents(yield* S3Storage.make(options))

      yield* Effect.promise(() => server.put("b", "m/a.bin", "a-2"))
      yield* Effect.promise(() => server.put("b", "m/b.bin", "b-2"))
      // While a.bin arrives, b.bin changes again: its listed ETag no longer holds.
      const meddling: Progress.Service = {
        publish: (event) =>
          event.name === "a.bin" && event.phase === "done"
            ? Effect.promise(() => server.put("b", "m/b.bin", "b-3"))
            : Effect.void,
        subscribe: Effect.succeed(Stream.empty)
      }
      const error = yield* Effect.flip(
        Effect.provideService(contents(yield* S3Storage.make(options)), Progress.Progress, meddling)
      )
      expect(error._tag).toBe("ChecksumMismatch")
      expect(filesUnder(cacheDir).filter((file) => file.includes("staging"))).toEqual([])
      // The cache still shows the complete first set, as it was.
      const offline = yield* contents(yield* S3Storage.make({ ...options, offline: true }))
      expect(offline).toEqual(good)
      expect(offline.map((file) => fs.readFileSync(file.path, "utf8"))).toEqual(["a-1", "b-1"])
    }))

  it.scoped("interrupted: no staging folder is left, and the previous snapshot stays", () =>
    Effect.gen(function*() {
      // The new version's GET stops half-way (the forwarder holds the rest): the load is surely mid-download.
      const stalled = new Set<string>()
      const server = yield* S3.make(["b"], { stalled })
      yield* Effect.promise(() => server.put("b", "m/a.bin", "first"))
      const cacheDir = yield* tempDir
      const options = { bucket: "b", prefix: "m", fileMask: "bin$", endpoint: server.endpoint, ...keys, cacheDir }
      yield* contents(yield* S3Storage.make(options))
      yield* Effect.promise(() => server.put("b", "m/a.bin", bytesOf(8 * 1024 * 1024, 5)))
      stalled.add("m/a.bin")
      const before = server.gets("a.bin").length
      const fiber = yield* Effect.fork(contents(yield* S3Storage.make(options)))
      yield* Effect.repeat(Effect.sync(() => server.gets("a.bin").length > before), {
        until: (started) => started,
        schedule: Schedule.spaced("10 millis")
      })
      yield* Fiber.interrupt(fiber)
      expect(filesUnder(cacheDir).filter((file) => file.includes("staging"))).toEqual([])
      const offline = yield* contents(yield* S3Storage.make({ ...options, offline: true }))
      expect(offline.map((file) => fs.readFileSync(file.path, "utf8"))).toEqual(["first"])
    }))

  it.scoped("two fibers loading at once fetch each object once; offline uses the cache only", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/a.bin", model))
      const cacheDir = yield* tempDir
      const options = { bucket: "b", prefix: "m", fileMask: "bin$", endpoint: server.endpoint, ...keys, cacheDir }
      const offlineFirst = yield* Effect.flip(contents(yield* S3Storage.make({ ...options, offline: true })))
      expect(offlineFirst._tag).toBe("NotCached")
      const storage = yield* S3Storage.make(options)
      const [x, y] = yield* Effect.all([contents(storage), contents(storage)], { concurrency: 2 })
      expect(x).toEqual(y)
      expect(server.gets("a.bin").length).toBe(1)
      const requests = server.log.length
      yield* contents(yield* S3Storage.make({ ...options, offline: true }))
      expect(server.log.length).toBe(requests)
    }))

  it.effect("bad kwargs are typed errors naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Storage.fromSelection({
        storage_type: "s3",
        storage_kwargs: { prefix: "a", path_to_files: "b", access_key_id: "x", file_mask: "(", part_size_mb: 0 }
      }))
      expect(error._tag).toBe("InvalidStorageOptions")
      if (error._tag !== "InvalidStorageOptions") return
      expect(error.issues.map((issue) => issue.field).sort()).toEqual(["bucket", "file_mask", "part_size_mb"])
      const second = yield* Effect.flip(Storage.fromSelection({
        storage_type: "s3",
        storage_kwargs: { bucket: "b", prefix: "a", path_to_files: "b", access_key_id: "x" }
      }))
      // Options given in code are named as the code wrote them.
      const inCode = yield* Effect.flip(S3Storage.make({ bucket: "b", partSizeMb: 0, stallTimeout: 0 }))
      expect(inCode.issues.map((issue) => issue.field).sort()).toEqual(["partSizeMb", "stallTimeout"])
      expect(second.message).toContain("path_to_files: conflicts with prefix")
      expect(second.message).toContain("secret_access_key: is missing")
    }))
})

withServer("S3Storage: AWS conventions", (it) => {
  const resolve = (env: Record<string, string>, settings: { endpoint?: string; region?: string; pathStyle?: boolean } = {}) =>
    s3Internal.resolveEndpointAndRegion({
      endpoint: settings.endpoint,
      region: settings.region,
      pathStyle: settings.pathStyle
    }).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ AWS_CONFIG_FILE: "/nonexistent", ...env })))))

  it.scoped("region: the kwarg, else AWS_REGION, the profile's, AWS_DEFAULT_REGION; none at all is an invalid option", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const config = path.join(dir, "config")
      fs.writeFileSync(config, [
        "[default]",
        "region = eu-central-1",
        "[profile minio]",
        "region = ap-south-1",
        "endpoint_url = http://minio.internal:9000",
        "s3 =",
        "  addressing_style = path"
      ].join("\n"))
      expect((yield* resolve({ AWS_REGION: "eu-west-3", AWS_CONFIG_FILE: config }, { region: "us-west-2" })).region).toBe("us-west-2")
      expect((yield* resolve({ AWS_REGION: "eu-west-3", AWS_DEFAULT_REGION: "sa-east-1", AWS_CONFIG_FILE: config })).region)
        .toBe("eu-west-3")
      expect((yield* resolve({ AWS_DEFAULT_REGION: "sa-east-1", AWS_CONFIG_FILE: config })).region).toBe("eu-central-1")
      expect((yield* resolve({ AWS_DEFAULT_REGION: "sa-east-1" })).region).toBe("sa-east-1")
      expect(yield* resolve({ AWS_PROFILE: "minio", AWS_CONFIG_FILE: config })).toEqual({
        region: "ap-south-1",
        endpoint: "http://minio.internal:9000",
        pathStyle: true
      })
      const none = yield* Effect.flip(resolve({}))
      expect(none).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "region" }] })
      expect(none.message).toContain("AWS_REGION")
    }))

  it.effect("endpoint: the kwarg, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; a custom endpoint is path-style", () =>
    Effect.gen(function*() {
      expect(yield* resolve({ AWS_ENDPOINT_URL: "http://a:1", AWS_ENDPOINT_URL_S3: "http://b:2" })).toEqual({
        endpoint: "http://b:2",
        region: "us-east-1",
        pathStyle: true
      })
      expect((yield* resolve({ AWS_ENDPOINT_URL: "http://a:1" })).endpoint).toBe("http://a:1")
      expect((yield* resolve({ AWS_ENDPOINT_URL: "http://a:1" }, { endpoint: "http://c:3", pathStyle: false }))).toEqual({
        endpoint: "http://c:3",
        region: "us-east-1",
        pathStyle: false
      })
      expect(
        yield* resolve({ AWS_ENDPOINT_URL_S3: "http://b:2", AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: "true", AWS_REGION: "eu-west-1" })
      ).toEqual({ endpoint: undefined, region: "eu-west-1", pathStyle: false })
    }))

  it.scoped("an application's own S3Client is used, and not destroyed", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      yield* Effect.promise(() => server.put("b", "m/a.bin", model))
      const client = new S3Client({
        region: "us-east-1",
        endpoint: server.endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: S3.accessKeyId, secretAccessKey: S3.secretAccessKey }
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
      const storage = yield* S3Storage.make({ bucket: "b", prefix: "m", fileMask: "bin$", client, cacheDir: yield* tempDir })
      expect((yield* contents(storage)).map((file) => file.bytes)).toEqual([fingerprint(model)])
      // Still usable after the load.
      const listed = yield* Effect.promise(() => client.send(new ListObjectsV2Command({ Bucket: "b" })))
      expect(listed.Contents?.map((object) => object.Key)).toEqual(["m/a.bin"])
    }))
})

withServer("S3Storage: archives (unpack)", (it) => {
  it.scoped("a model.tar.gz: unpacked once, then offline from the cache; unpack with cache: false is refused up front", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      const archive = yield* archiveOf("tar.gz", { "model.onnx": model })
      yield* Effect.promise(() => server.put("b", "m/model.tar.gz", archive))
      const cacheDir = yield* tempDir
      const options = { bucket: "b", prefix: "m/", fileMask: String.raw`\.onnx$`, endpoint: server.endpoint, ...keys, cacheDir, unpack: "auto" } as const
      const online = yield* Effect.flatMap(S3Storage.make(options), contents)
      expect(online).toMatchObject([{ name: "model.onnx", bytes: fingerprint(model) }])
      const offline = yield* Effect.flatMap(S3Storage.make({ ...options, offline: true }), contents)
      expect(offline).toEqual(online)
      const conflict = yield* Effect.flip(S3Storage.make({ ...options, cache: false, needLoadFile: true }))
      expect(conflict).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "unpack" }] })
    }))
})

withServer("S3Storage: watched (Storage.watch)", (it) => {
  it.scoped("a listing per check: a new version when an object changed, none while nothing did", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["b"])
      const cacheDir = yield* tempDir
      const perCheck = yield* followsItsSource({
        storage: S3Storage.layer({ bucket: "b", prefix: "m/", fileMask: "onnx$", endpoint: server.endpoint, ...keys, cacheDir }).pipe(Layer.provide(platform)),
        write: (text) => Effect.promise(() => server.put("b", "m/model.onnx", text)),
        requests: () => server.log.length
      })
      expect(perCheck).toBe(1)
    }))
})
