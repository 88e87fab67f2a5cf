import { expect, layer } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as GcsStorage from "../src/GcsStorage.js"
import * as NodeStorage from "../src/NodeStorage.js"
import * as Storage from "../src/Storage.js"
import * as StorageUri from "../src/StorageUri.js"
import { storageContract } from "../src/Testing.js"
import { bytesOf, contents, fingerprint, platform, tempDir } from "./helpers.js"
import * as TestProxy from "./servers/proxy.js"
import * as S3 from "./servers/s3.js"
import { followsItsSource } from "./watching.js"

const quiet = Logger.minimumLogLevel(LogLevel.Error)
const env = Layer.merge(platform, quiet)
const withServer = layer(env, { excludeTestServices: true })
const model = bytesOf(300_000, 11)
const weights = bytesOf(40_000, 12)

// What a machine with AWS set up has in its environment: none of it may reach a gs:// load.
const awsEnvironment = {
  AWS_ENDPOINT_URL: "http://127.0.0.1:9/aws",
  AWS_ENDPOINT_URL_S3: "http://127.0.0.1:9/aws-s3",
  AWS_REGION: "eu-west-3",
  AWS_ACCESS_KEY_ID: "AKIAAWSKEY",
  AWS_SECRET_ACCESS_KEY: "aws-secret",
  AWS_CONFIG_FILE: "/nonexistent"
}
const withEnv = (vars: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

// GCS through its XML API, played by s3rver on loopback (it checks access key ids, as GCS checks HMAC access ids).
const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const server = yield* S3.make(["models"])
    yield* Effect.promise(() => server.put("models", "iris/model.onnx", model))
    yield* Effect.promise(() => server.put("models", "iris/weights.bin", weights))
    yield* Effect.promise(() => server.put("models", "iris/README.md", "not a model"))
    return {
      layer: Storage.layerFromSelection({
        storage_type: "gcs",
        storage_kwargs: {
          storage_uri: "gs://models/iris",
          file_mask: String.raw`\.(onnx|bin)$`,
          endpoint: server.endpoint,
          access_key_id: S3.accessKeyId,
          secret_access_key: S3.secretAccessKey,
          cache_dir: yield* tempDir,
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

storageContract("GcsStorage (paths)", fixture(false))
storageContract("GcsStorage (bytes)", fixture(true))
storageContract("GcsStorage (straight into memory, cache: false)", fixture(true, false))

withServer("GcsStorage: GCS's rules", (it) => {
  it.effect("gs://bucket/prefix is the GCS storage (by its names gcs, gs, GcsStorage), bucket and prefix", () =>
    Effect.gen(function*() {
      expect(StorageUri.parse("gs://models/iris/v3/")).toMatchObject({
        _tag: "Right",
        right: { storage_type: "gcs", storage_kwargs: { bucket: "models", prefix: "iris/v3/" } }
      })
      expect(StorageUri.parse("gs://models")).toMatchObject({ right: { storage_kwargs: { bucket: "models" } } })
      expect(StorageUri.parse("gs:///x")).toMatchObject({ _tag: "Left", left: { storageType: "gcs" } })
      // gs:// with storage_type s3 is refused: the two storages differ in endpoint and credentials.
      const clash = yield* Effect.flip(Storage.validate({ storage_type: "s3", storage_kwargs: { storage_uri: "gs://b/p" } }))
      expect(clash._tag).toBe("InvalidStorageOptions")
      for (const name of ["gcs", "gs", "GcsStorage"]) {
        const { definition } = yield* Storage.validate({ storage_type: name, storage_kwargs: { storage_uri: "gs://b/p" } })
        expect(definition).toBe(GcsStorage.definition)
      }
      // GCS has no region, path style or session token.
      const extra = yield* Effect.flip(Storage.validate({ storage_type: "gcs", storage_kwargs: { bucket: "b", region: "us" } }))
      expect(extra._tag).toBe("InvalidStorageOptions")
    }))

  it.scoped("the endpoint is storage.googleapis.com, whatever the AWS variables say; the AWS keys are never used", () =>
    Effect.gen(function*() {
      // A proxy that wants credentials it is not given: it records where the request went, and nothing leaves loopback.
      const proxy = yield* TestProxy.make("Basic c29tZW9uZTpzZWNyZXQ=")
      const failed = yield* Effect.flip(
        Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
          Effect.provide(NodeStorage.layerGcs({ bucket: "models", prefix: "iris/", cacheDir: yield* tempDir, retries: 0 })),
          withEnv({ ...awsEnvironment, HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url })
        )
      )
      expect(proxy.log.map((entry) => `${entry.method} ${entry.target}`)).toEqual(["CONNECT storage.googleapis.com:443"])
      expect(JSON.stringify(failed)).toContain("gs://models/iris/")
    }))

  it.scoped("HMAC keys from the kwargs or GCS_ACCESS_KEY_ID / GCS_SECRET_ACCESS_KEY; none: unsigned; path-style, no AWS checksums", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      yield* Effect.promise(() => server.put("models", "iris/model.onnx", model))
      const requestsFrom = (start: number) => server.log.slice(start)
      const load = (options: Partial<GcsStorage.Options>, vars: Record<string, string>) =>
        Effect.flatMap(
          GcsStorage.make({
            bucket: "models",
            prefix: "iris/",
            fileMask: "onnx$",
            endpoint: server.endpoint,
            retries: 0,
            cacheDir: "",
            ...options
          }),
          contents
        ).pipe(withEnv({ ...awsEnvironment, ...vars }))

      // From the environment, signed with the HMAC key's access id (and never the AWS key's).
      let start = server.log.length
      const files = yield* load({ cacheDir: yield* tempDir }, {
        GCS_ACCESS_KEY_ID: S3.accessKeyId,
        GCS_SECRET_ACCESS_KEY: S3.secretAccessKey
      })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(model)])
      const signed = requestsFrom(start)
      expect(signed.map((entry) => `${entry.method} ${entry.url.split("?")[0]}`)).toEqual([
        "GET /models/",
        "GET /models/iris/model.onnx"
      ])
      for (const entry of signed) {
        expect(String(entry.headers["authorization"])).toContain(`Credential=${S3.accessKeyId}/`)
        expect(String(entry.headers["authorization"])).toContain("/auto/s3/aws4_request")
        expect(entry.headers["x-amz-checksum-mode"]).toBeUndefined()
      }
      // A wrong access id is Unauthorized, with the way to HMAC keys; the secret is never shown.
      const denied = yield* Effect.flip(load({ accessKeyId: "GOOG1WRONG", secretAccessKey: "hmac-secret-value", cacheDir: yield* tempDir }, {}))
      expect(denied).toMatchObject({ _tag: "Unauthorized", status: 403 })
      expect(denied.message).toContain("HMAC")
      expect(JSON.stringify(denied) + denied.message).not.toContain("hmac-secret-value")
      // Half a key is an invalid option, from the kwargs or the environment.
      const half = yield* Effect.flip(load({ accessKeyId: "GOOG1ONLY", cacheDir: yield* tempDir }, {}))
      expect(half).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "secret_access_key" }] })
      const halfEnv = yield* Effect.flip(load({ cacheDir: yield* tempDir }, { GCS_ACCESS_KEY_ID: "GOOG1ONLY" }))
      expect(halfEnv).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "secret_access_key" }] })
      // No key at all: unsigned requests (a public bucket), not the AWS chain.
      start = server.log.length
      yield* Effect.ignore(load({ cacheDir: yield* tempDir }, {}))
      const anonymous = requestsFrom(start)
      expect(anonymous.length).toBeGreaterThan(0)
      for (const entry of anonymous) expect(entry.headers["authorization"]).toBeUndefined()
    }))
})

withServer("GcsStorage: watched (Storage.watch)", (it) => {
  it.scoped("a listing per check (need_load_file: true: the checks take the cached files by path)", () =>
    Effect.gen(function*() {
      const server = yield* S3.make(["models"])
      const perCheck = yield* followsItsSource({
        storage: Storage.layerFromSelection({
          storage_type: "gcs",
          storage_kwargs: {
            storage_uri: "gs://models/iris",
            file_mask: String.raw`\.onnx$`,
            endpoint: server.endpoint,
            access_key_id: S3.accessKeyId,
            secret_access_key: S3.secretAccessKey,
            cache_dir: yield* tempDir,
            need_load_file: true
          }
        }).pipe(Layer.provide(env)),
        write: (text) => Effect.promise(() => server.put("models", "iris/model.onnx", text)),
        requests: () => server.log.length
      })
      expect(perCheck).toBe(1)
    }))
})
