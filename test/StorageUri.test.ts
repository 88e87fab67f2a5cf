import { describe, expect, it } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Storage from "../src/Storage.js"
import * as StorageUri from "../src/StorageUri.js"

describe("StorageUri", () => {
  it("reads s3, http(s), file URIs and absolute paths", () => {
    expect(StorageUri.parse("s3://models/iris/v3/")).toEqual(
      Either.right({ storage_type: "s3", storage_kwargs: { bucket: "models", prefix: "iris/v3/" } })
    )
    expect(StorageUri.parse("s3://models")).toEqual(Either.right({ storage_type: "s3", storage_kwargs: { bucket: "models" } }))
    // Keys are taken as written: no URL decoding, spaces and percent signs kept.
    expect(StorageUri.parse("s3://b/a b/100%.onnx")).toEqual(
      Either.right({ storage_type: "s3", storage_kwargs: { bucket: "b", prefix: "a b/100%.onnx" } })
    )
    expect(StorageUri.parse("https://host/path/model.onnx?token=x")).toEqual(
      Either.right({ storage_type: "http", storage_kwargs: { urls: "https://host/path/model.onnx?token=x" } })
    )
    expect(StorageUri.parse("file:///models/iris%20v1")).toEqual(
      Either.right({ storage_type: "disk", storage_kwargs: { path_to_files: "/models/iris v1" } })
    )
    expect(StorageUri.parse("/mnt/models")).toEqual(
      Either.right({ storage_type: "disk", storage_kwargs: { path_to_files: "/mnt/models" } })
    )
  })

  it("refuses what it cannot read, naming storage_uri and never showing a secret", () => {
    for (const uri of ["ftp://host/m.onnx", "models/iris", "s3:///prefix", "file://otherhost/m", "gopher://u:hunter2@h/"]) {
      const result = StorageUri.parse(uri)
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.issues[0]!.field).toBe("storage_uri")
        expect(result.left.message).not.toContain("hunter2")
      }
    }
  })

  it("credentials in an s3://, gs://, az:// or hf:// URI are refused, never quoted, never taken as a prefix", () => {
    for (
      const uri of [
        "s3://key:s3cr3tpw@bucket/x",
        "gs://k:s3cr3tpw@b/x",
        "az://acct:s3cr3tpw@container/x",
        "hf://user:s3cr3tpw@org/name",
        "s3://key:s3cr/3tpw@bucket/x",
        "gs://s3cr3tpw@b/x",
        "s3://bucket:9000/x"
      ]
    ) {
      const result = StorageUri.parse(uri)
      expect(Either.isLeft(result), uri).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.issues[0]!.field).toBe("storage_uri")
        expect(result.left.message).toContain("credentials")
        expect(result.left.message).not.toMatch(/s3cr|3tpw|key:|9000/)
      }
    }
  })

  it("hostile URIs: dot segments, control characters and over-long keys are refused before any request", () => {
    const refused = (uri: string, words: string) => {
      const result = StorageUri.parse(uri)
      expect(Either.isLeft(result), uri).toBe(true)
      if (Either.isLeft(result)) expect(result.left.message).toContain(words)
    }
    refused("gs://b/../x", `".." segment`)
    refused("s3://b/a/./x", `".." segment`)
    refused("az://c/a/..", `".." segment`)
    refused("hf://a/b@v1/../../etc", `".." segment`)
    refused("hf://a/b/x/%2e%2e/y", `".." segment`)
    refused("s3://b/a\u0000b", "control character")
    refused("hf://a/b/x%00y", "control character")
    refused(`s3://b/${"k".repeat(1025)}`, "1025 bytes long")
    refused(`gs://b/${"é".repeat(513)}`, "1026 bytes long")
    // The longest key is taken.
    expect(Either.isRight(StorageUri.parse(`s3://b/${"k".repeat(1024)}`))).toBe(true)
    // ".." inside a name is a name.
    expect(StorageUri.parse("s3://b/v1..v2/m")).toEqual(
      Either.right({ storage_type: "s3", storage_kwargs: { bucket: "b", prefix: "v1..v2/m" } })
    )
  })

  it("a 100 KB URI is quoted capped in the message", () => {
    const result = StorageUri.parse(`ftp://host/${"x".repeat(100_000)}`)
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left.message.length).toBeLessThan(1000)
      expect(result.left.message).toContain("more characters")
    }
  })

  it("hf:// names: an empty revision is said to be one; the path is percent-decoded (# and space)", () => {
    const empty = StorageUri.parse("hf://a/b@")
    expect(Either.isLeft(empty) && empty.left.message).toContain("empty revision")
    expect(Either.isLeft(empty) && empty.left.message).not.toContain("no repository")
    expect(StorageUri.parse("hf://acme/iris@v1/dir/a%23b%20c.bin")).toEqual(
      Either.right({
        storage_type: "hf",
        storage_kwargs: { repo_id: "acme/iris", revision: "v1", path_in_repo: "dir/a#b c.bin" }
      })
    )
    expect(StorageUri.parse("hf://acme/iris/my file.bin")).toEqual(
      Either.right({ storage_type: "hf", storage_kwargs: { repo_id: "acme/iris", path_in_repo: "my file.bin" } })
    )
    const fragment = StorageUri.parse("hf://acme/iris/a#b.bin")
    expect(Either.isLeft(fragment) && fragment.left.message).toContain("%23")
  })

  it.effect("the same key rules hold for prefixes and paths given as kwargs", () =>
    Effect.gen(function*() {
      for (
        const [storage_type, kwargs, field] of [
          ["s3", { bucket: "b", prefix: "../x" }, "prefix"],
          ["gcs", { bucket: "b", path_to_files: "a\u0000" }, "path_to_files"],
          ["azure", { container: "models", prefix: "k".repeat(1025) }, "prefix"],
          ["hf", { repo_id: "a/b", path_in_repo: "x/../../etc" }, "path_in_repo"]
        ] as const
      ) {
        const error = yield* Effect.flip(Storage.validate({ storage_type, storage_kwargs: kwargs }))
        expect(error._tag === "InvalidStorageOptions" && error.issues.map((issue) => issue.field), storage_type)
          .toEqual([field])
      }
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("storage_uri in storage_kwargs selects the storage; a clash with a kwarg or storage_type is refused", () =>
    Effect.gen(function*() {
      const validated = yield* Storage.validate({
        storage_kwargs: { storage_uri: "s3://models/iris/", file_mask: "onnx$", endpoint: "http://127.0.0.1:9000" }
      })
      expect(validated.storageType).toBe("s3")
      expect(validated.kwargs).toMatchObject({ bucket: "models", prefix: "iris/", endpoint: "http://127.0.0.1:9000" })
      // mlup's full name of the same storage agrees with the URI.
      const disk = yield* Storage.validate({
        storage_type: "mlup.ml.storage.local_disk.DiskStorage",
        storage_kwargs: { storage_uri: "file:///models" }
      })
      expect(disk.definition.name).toBe("disk")

      const clash = yield* Effect.flip(Storage.validate({ storage_kwargs: { storage_uri: "s3://b/p", prefix: "q" } }))
      expect(clash._tag === "InvalidStorageOptions" && clash.issues.map((issue) => issue.field)).toEqual(["prefix"])
      const other = yield* Effect.flip(Storage.validate({ storage_type: "http", storage_kwargs: { storage_uri: "s3://b/p" } }))
      expect(other._tag === "InvalidStorageOptions" && other.issues[0]!.field).toBe("storage_uri")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("a store or folder named by URI delivers every file unless a mask is given; mlup's keys keep mlup's default", () =>
    Effect.gen(function*() {
      // The mask as each storage's validated options hold it (the Disk storage's are resolved: fileMask).
      const maskOf = (kwargs: unknown) => {
        const { fileMask, file_mask, files_mask } = kwargs as Record<string, RegExp | undefined>
        return (file_mask ?? files_mask ?? fileMask)!
      }
      for (const uri of ["s3://models/iris/", "gs://models/iris/", "az://models/iris/", "file:///models/iris"]) {
        const validated = yield* Storage.validate({ storage_kwargs: { storage_uri: uri } })
        expect(maskOf(validated.kwargs).test("anything.bin"), uri).toBe(true)
        const masked = yield* Storage.validate({ storage_kwargs: { storage_uri: uri, files_mask: "onnx$" } })
        expect(maskOf(masked.kwargs).test("anything.bin"), uri).toBe(false)
      }
      const byKwargs = yield* Storage.validate({ storage_type: "s3", storage_kwargs: { bucket: "models", prefix: "iris/" } })
      // No mask by mlup's keys: the storage's default, mlup's (\w.-_)*.pckl, applies.
      expect((byKwargs.kwargs as Record<string, unknown>)["file_mask"]).toBeUndefined()
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("a URI given as the S3 prefix is refused, never taken as a key", () =>
    Effect.gen(function*() {
      for (const field of ["prefix", "path_to_files"]) {
        const error = yield* Effect.flip(
          Storage.validate({ storage_type: "s3", storage_kwargs: { bucket: "models", [field]: "s3://models/iris/" } })
        )
        expect(error._tag === "InvalidStorageOptions" && error.issues[0]).toMatchObject({ field })
        expect(error.message).toContain("storage_uri")
      }
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("STORAGE_URI (KServe's variable) selects the storage from the environment", () =>
    Effect.gen(function*() {
      const selection = yield* Storage.selectionFromConfig().pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([
          ["STORAGE_URI", "https://models.example/iris/model.onnx"],
          ["STORAGE_KWARGS_SHA256", "a".repeat(64)]
        ]), { pathDelim: "_" }))
      )
      const validated = yield* Storage.validate(selection)
      expect(validated.storageType).toBe("http")
      expect(validated.kwargs).toMatchObject({ urls: "https://models.example/iris/model.onnx", sha256: "a".repeat(64) })
    }).pipe(Effect.provide(NodeContext.layer)))
})
