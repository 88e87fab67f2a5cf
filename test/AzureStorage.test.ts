import { afterAll, expect, layer } from "@effect/vitest"
import { ContainerSASPermissions, generateBlobSASQueryParameters, StorageSharedKeyCredential } from "@azure/storage-blob"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as AzureStorage from "../src/AzureStorage.js"
import * as azureInternal from "../src/internal/azure.js"
import * as mask from "../src/internal/mask.js"
import * as transfer from "../src/internal/transfer.js"
import * as NodeStorage from "../src/NodeStorage.js"
import * as Storage from "../src/Storage.js"
import * as StorageUri from "../src/StorageUri.js"
import { storageContract } from "../src/Testing.js"
import { budgetAfterFailure, bytesOf, contents, filesUnder, fingerprint, partsRecords, platform, tempDir } from "./helpers.js"
import * as Azurite from "./servers/azurite.js"
import * as Certificates from "./servers/certificates.js"
import * as TestProxy from "./servers/proxy.js"
import { followsItsSource } from "./watching.js"

const quiet = Logger.minimumLogLevel(LogLevel.Error)
const env = Layer.merge(platform, quiet)
const withServer = layer(env, { excludeTestServices: true })
const MiB = 1024 * 1024
const model = bytesOf(300_000, 31)
const weights = bytesOf(50_000, 32)

// No AZURE_* variable of the machine's may reach a test: each test says its own.
const withEnv = (vars: Record<string, string> = {}) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

// The contract's fixtures share one Azurite (starting one takes over a second), a container each.
const shared = Effect.runSync(Scope.make())
afterAll(() => Effect.runPromise(Scope.close(shared, Exit.void)))
const sharedAzurite = Effect.runSync(Effect.cached(Scope.extend(Azurite.make(), shared)))
let containers = 0

const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const azurite = yield* sharedAzurite
    const container = `contract-${++containers}`
    yield* Effect.promise(() => azurite.createContainer(container))
    yield* Effect.promise(() => azurite.put(container, "iris/model.onnx", model))
    yield* Effect.promise(() => azurite.put(container, "iris/weights.bin", weights))
    yield* Effect.promise(() => azurite.put(container, "iris/README.md", "not a model"))
    return {
      layer: Storage.layerFromSelection({
        storage_type: "azure",
        storage_kwargs: {
          storage_uri: `az://${container}/iris`,
          file_mask: String.raw`\.(onnx|bin)$`,
          endpoint: azurite.endpoint,
          account: Azurite.account,
          account_key: Azurite.accountKey,
          cache_dir: yield* tempDir,
          need_load_file: needLoadFile,
          cache
        }
      }).pipe(Layer.provide(env), Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map())))),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: model },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "weights.bin", content: weights }
      ]
    }
  })

storageContract("AzureStorage (paths)", fixture(false))
storageContract("AzureStorage (bytes)", fixture(true))
storageContract("AzureStorage (straight into memory, cache: false)", fixture(true, false))

withServer("AzureStorage: straight into memory (cache: false)", (it) => {
  it.scoped("parts into one buffer; a part cut off or a Content-MD5 that does not match gives back the buffer and budget at once", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      const large = bytesOf(3 * 1024 * 1024 + 17, 23)
      yield* Effect.promise(() => azurite.put("models", "big/model.onnx", large))
      const cacheDir = yield* tempDir
      const make = (fileMask: string) =>
        AzureStorage.make({
          connectionString: azurite.connectionString,
          container: "models",
          prefix: "big/",
          fileMask,
          cacheDir,
          needLoadFile: true,
          cache: false,
          multipartThresholdMb: 1,
          partSizeMb: 1,
          retries: 0
        }).pipe(withEnv())
      const delivered = yield* contents(yield* make("model"))
      expect(delivered.map((file) => [file.tag, file.path, file.bytes])).toEqual([
        ["Bytes", "az://models/big/model.onnx", fingerprint(large)]
      ])
      expect(azurite.gets().every((entry) => entry.ifMatch !== undefined)).toBe(true)

      azurite.cutAfter = { bytes: 1000, count: 1, skip: 2 }
      const cut = yield* budgetAfterFailure(yield* make("model"))
      expect(cut.error).toMatchObject({ _tag: "TransientFailure", location: "az://models/big/model.onnx" })
      expect(cut.stillTaken).toBe(0)

      yield* Effect.promise(() => azurite.put("models", "big/other.onnx", large))
      yield* Effect.promise(() =>
        azurite.client.getContainerClient("models").getBlobClient("big/other.onnx").setHTTPHeaders({
          blobContentMD5: new Uint8Array(16).fill(9)
        })
      )
      const refused = yield* budgetAfterFailure(yield* make("other"))
      expect(refused.error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "md5 (Content-MD5)" })
      expect(refused.stillTaken).toBe(0)
      expect(filesUnder(cacheDir)).toEqual([])
    }), 60_000)
})

withServer("AzureStorage: Azurite", (it) => {
  const load = (options: AzureStorage.Options, vars?: Record<string, string>) =>
    Effect.flatMap(AzureStorage.make({ retries: 0, ...options }), contents).pipe(withEnv(vars))

  it.effect("az://container/prefix and the account's https URL are the Azure storage; a SAS URL stays HTTP", () =>
    Effect.gen(function*() {
      expect(StorageUri.parse("az://models/iris/v3/")).toMatchObject({
        right: { storage_type: "azure", storage_kwargs: { container: "models", prefix: "iris/v3/" } }
      })
      expect(StorageUri.parse("https://acme.blob.core.windows.net/models/iris%20v3/model.onnx")).toMatchObject({
        right: { storage_type: "azure", storage_kwargs: { account: "acme", container: "models", prefix: "iris v3/model.onnx" } }
      })
      expect(StorageUri.parse("https://acme.blob.core.windows.net/models/m.onnx?sv=2024&sig=abc")).toMatchObject({
        right: { storage_type: "http" }
      })
      expect(StorageUri.parse("az:///x")._tag).toBe("Left")
      expect(StorageUri.parse("https://acme.blob.core.windows.net/models/bad%zz")).toMatchObject({ _tag: "Left", left: { storageType: "azure" } })
      // With storage_type http, an account's URL is one file over HTTP, as before the Azure storage existed.
      const overHttp = yield* Storage.validate({
        storage_type: "http",
        storage_kwargs: { storage_uri: "https://acme.blob.core.windows.net/models/m.onnx" }
      })
      expect(overHttp.kwargs).toMatchObject({ urls: "https://acme.blob.core.windows.net/models/m.onnx" })
      const bad = yield* Effect.flip(Storage.validate({
        storage_type: "az",
        storage_kwargs: { container: "Bad_Name", account: "UPPER", endpoint: "ftp://x" }
      }))
      expect(bad._tag === "InvalidStorageOptions" && bad.issues.map((issue) => issue.field).sort()).toEqual(["account", "container", "endpoint"])
      const none = yield* Effect.flip(AzureStorage.make({ container: "models" }).pipe(withEnv()))
      expect(none).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "account" }] })
      const two = yield* Effect.flip(AzureStorage.make({ container: "models", account: "acme", accountKey: "k", sasToken: "s" }))
      // Named as given: neither blames connection_string, which was not given.
      expect(two).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "sas_token" }] })
      expect(two.message).toContain("is given with account_key")
      expect(two.message).not.toContain("connection_string:")
    }))

  it.scoped("credentials: a connection string or account and key from the environment, a SAS token, public access; a wrong key is Unauthorized", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      yield* Effect.promise(() => azurite.createContainer("public", "container"))
      yield* Effect.promise(() => azurite.put("models", "iris/model.onnx", model))
      yield* Effect.promise(() => azurite.put("public", "iris/model.onnx", model))
      const expected = [fingerprint(model)]
      const options = { container: "models", prefix: "iris/", fileMask: "onnx$" }
      const since = (start: number) => azurite.log.slice(start)

      // AZURE_STORAGE_CONNECTION_STRING: signed requests.
      let start = azurite.log.length
      const viaConnection = yield* load({ ...options, cacheDir: yield* tempDir }, { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString })
      expect(viaConnection.map((file) => file.bytes)).toEqual(expected)
      expect(since(start).length).toBeGreaterThan(0)
      expect(since(start).every((entry) => entry.signed)).toBe(true)
      // AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY (or KServe's AZURE_STORAGE_ACCESS_KEY), the endpoint from the kwargs.
      // (The account the endpoint names wins over the environment's.)
      const viaKey = yield* load({ ...options, endpoint: azurite.endpoint, cacheDir: yield* tempDir }, {
        AZURE_STORAGE_ACCOUNT: "someotheraccount",
        AZURE_STORAGE_ACCESS_KEY: Azurite.accountKey
      })
      expect(viaKey.map((file) => file.bytes)).toEqual(expected)
      // A SAS token: unsigned requests that carry the token in their query.
      const sas = generateBlobSASQueryParameters({
        containerName: "models",
        permissions: ContainerSASPermissions.parse("rl"),
        expiresOn: new Date(Date.now() + 3600_000)
      }, new StorageSharedKeyCredential(Azurite.account, Azurite.accountKey)).toString()
      start = azurite.log.length
      const viaSas = yield* load({ ...options, endpoint: azurite.endpoint, sasToken: sas, cacheDir: yield* tempDir })
      expect(viaSas.map((file) => file.bytes)).toEqual(expected)
      expect(since(start).every((entry) => !entry.signed && entry.url.includes("sig="))).toBe(true)
      // A public container: no credentials at all.
      start = azurite.log.length
      const anonymous = yield* load({ ...options, container: "public", endpoint: azurite.endpoint, cacheDir: yield* tempDir })
      expect(anonymous.map((file) => file.bytes)).toEqual(expected)
      expect(since(start).every((entry) => !entry.signed)).toBe(true)
      // A wrong key: Unauthorized, with the ways to give credentials; the key is never shown.
      const wrongKey = Buffer.from("not the key of this account, not at all").toString("base64")
      const denied = yield* Effect.flip(load({ ...options, endpoint: azurite.endpoint, account: Azurite.account, accountKey: wrongKey, cacheDir: yield* tempDir }))
      expect(denied).toMatchObject({ _tag: "Unauthorized", status: 403 })
      expect(denied.message).toContain("AZURE_STORAGE_CONNECTION_STRING")
      expect(JSON.stringify(denied) + denied.message).not.toContain(wrongKey)
      // A missing container: RemoteNotFound.
      const missing = yield* Effect.flip(load({ ...options, container: "absent", endpoint: azurite.endpoint, account: Azurite.account, accountKey: Azurite.accountKey, cacheDir: yield* tempDir }))
      expect(missing).toMatchObject({ _tag: "RemoteNotFound", status: 404 })
    }), 60_000)

  it.scoped("ETag-keyed snapshots: unchanged blobs are not fetched again; Content-MD5 is checked", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      yield* Effect.promise(() => azurite.put("models", "m/a.bin", model))
      yield* Effect.promise(() => azurite.put("models", "m/b.bin", weights, { md5: false }))
      const cacheDir = yield* tempDir
      const options = { container: "models", prefix: "m/", fileMask: "bin$", endpoint: azurite.endpoint, account: Azurite.account, accountKey: Azurite.accountKey, cacheDir }
      const first = yield* load(options)
      expect(first.map((file) => file.bytes)).toEqual([fingerprint(model), fingerprint(weights)])
      expect(azurite.gets().length).toBe(2)
      // Every download is pinned to the listed version.
      expect(azurite.gets().every((entry) => entry.ifMatch !== undefined)).toBe(true)
      yield* load(options)
      expect(azurite.gets().length).toBe(2)
      const changed = bytesOf(300_000, 77)
      yield* Effect.promise(() => azurite.put("models", "m/a.bin", changed))
      const second = yield* load(options)
      expect(second.map((file) => file.bytes)).toEqual([fingerprint(changed), fingerprint(weights)])
      expect(azurite.gets("a.bin").length).toBe(2)
      expect(azurite.gets("b.bin").length).toBe(1)
      // A blob whose Content-MD5 does not match its bytes is never delivered.
      yield* Effect.promise(() =>
        azurite.client.getContainerClient("models").getBlobClient("m/a.bin").setHTTPHeaders({
          blobContentMD5: new Uint8Array(16).fill(7)
        })
      )
      const mismatch = yield* Effect.flip(load(options))
      expect(mismatch).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "md5 (Content-MD5)", location: "az://models/m/a.bin" })
      // The previous snapshot stays, offline.
      const offline = yield* load({ ...options, offline: true })
      expect(offline.map((file) => file.bytes)).toEqual([fingerprint(changed), fingerprint(weights)])
    }), 60_000)

  it.scoped("large blobs: parallel ranged reads pinned to the ETag; a cut one resumes with only the missing parts", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      const large = bytesOf(4 * MiB + 17, 8)
      // Uploaded in one request: it has a Content-MD5, checked on the whole file after the parts.
      yield* Effect.promise(() => azurite.put("models", "big/model.onnx", large))
      const cacheDir = yield* tempDir
      const options = {
        container: "models",
        prefix: "big/",
        fileMask: "onnx$",
        endpoint: azurite.endpoint,
        account: Azurite.account,
        accountKey: Azurite.accountKey,
        cacheDir,
        multipartThresholdMb: 1,
        partSizeMb: 1,
        partConcurrency: 2
      }
      // The third part is cut off after 256 KiB, without retries: the load fails; the parts before
      // it, a part under way (that finishes) and the cut part's bytes (flushed) are recorded.
      azurite.cutAfter = { bytes: 256 * 1024, count: 1, skip: 0, from: 2 * MiB }
      const cut = yield* Effect.flip(load(options))
      expect(cut).toMatchObject({ _tag: "TransientFailure", location: "az://models/big/model.onnx" })
      const firstRun = azurite.gets()
      const rangeOf = (i: number, from = i * MiB) => `bytes=${from}-${Math.min(large.byteLength, (i + 1) * MiB) - 1}`
      expect(firstRun.map((entry) => entry.range).sort().slice(0, 3)).toEqual([0, 1, 2].map((i) => rangeOf(i)))
      expect(firstRun.every((entry) => entry.ifMatch !== undefined)).toBe(true)
      const record = partsRecords(cacheDir)[0]!
      expect(Object.keys(record.parts)).toEqual(expect.arrayContaining(["0", "1"]))
      expect(record.progress?.["2"]?.bytes).toBeGreaterThan(0)
      expect(record.progress?.["2"]?.bytes).toBeLessThanOrEqual(256 * 1024)
      const before = azurite.gets().length
      const delivered = yield* load(options)
      expect(delivered.map((file) => file.bytes)).toEqual([fingerprint(large)])
      // Five parts in all: the resumed load asked only for what no record held.
      expect(azurite.gets().slice(before).map((entry) => entry.range).sort()).toEqual(
        [0, 1, 2, 3, 4].filter((i) => record.parts[String(i)] === undefined).map((i) =>
          rangeOf(i, i * MiB + (record.progress?.[String(i)]?.bytes ?? 0))
        ).sort()
      )
      // The same, with a Content-MD5 that does not match: every part arrives, the whole is refused.
      yield* Effect.promise(() => azurite.put("models", "big/other.onnx", large))
      yield* Effect.promise(() =>
        azurite.client.getContainerClient("models").getBlobClient("big/other.onnx").setHTTPHeaders({
          blobContentMD5: new Uint8Array(16).fill(9)
        })
      )
      const refused = yield* Effect.flip(load({ ...options, fileMask: "other" }))
      expect(refused).toMatchObject({ _tag: "ChecksumMismatch", algorithm: "md5 (Content-MD5)", location: "az://models/big/other.onnx" })
    }), 60_000)

  it.scoped("Microsoft Entra ID: the application's own TokenCredential, over HTTPS with a company CA (ca_bundle)", () =>
    Effect.gen(function*() {
      const certificates = yield* Certificates.make
      const azurite = yield* Azurite.make({ tls: { cert: certificates.cert, key: certificates.key, ca: certificates.ca } })
      yield* Effect.promise(() => azurite.createContainer("models"))
      yield* Effect.promise(() => azurite.put("models", "iris/model.onnx", model))
      // A token as Entra ID issues them (Azurite checks audience, issuer and expiry, not the signature).
      const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url")
      const now = Math.floor(Date.now() / 1000)
      const tenant = "ab1f708d-50f6-404c-a006-d71b2ac7a606"
      const jwt = `${b64({ alg: "RS256", typ: "JWT" })}.${
        b64({ aud: "https://storage.azure.com", iss: `https://sts.windows.net/${tenant}/`, iat: now - 60, nbf: now - 60, exp: now + 3600, tid: tenant, oid: "app" })
      }.c2lnbmF0dXJl`
      const scopes: Array<string> = []
      const credential = (token: string): AzureStorage.TokenCredential => ({
        getToken: (asked) => {
          scopes.push(...(typeof asked === "string" ? [asked] : asked))
          return Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3600_000 })
        }
      })
      const options = {
        container: "models",
        prefix: "iris/",
        fileMask: "onnx$",
        endpoint: azurite.endpoint,
        caBundle: certificates.caFile,
        credential: credential(jwt)
      }
      const files = yield* load({ ...options, cacheDir: yield* tempDir })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(scopes).toContain("https://storage.azure.com/.default")
      // A token the service refuses: Unauthorized; the token is never shown.
      const refused = yield* Effect.flip(load({ ...options, credential: credential("not-a-token"), cacheDir: yield* tempDir }))
      expect(refused).toMatchObject({ _tag: "Unauthorized", status: 403 })
      expect(refused.message).not.toContain(jwt)
      // Without the company's CA: TlsFailure, at once.
      const untrusted = yield* Effect.flip(load({ ...options, caBundle: undefined, cacheDir: yield* tempDir }).pipe(withEnv({ SSL_CERT_FILE: "/nonexistent" })))
      expect(untrusted._tag).toBe("TlsFailure")
      // A credential with a key, or over plain http: invalid options, said before any request.
      const both = yield* Effect.flip(AzureStorage.make({ ...options, accountKey: Azurite.accountKey }))
      expect(both).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "credential" }] })
      expect(both.message).toContain("credential: is given with account_key")
      const clear = yield* Effect.flip(AzureStorage.make({ ...options, endpoint: "http://127.0.0.1:9/devstoreaccount1" }))
      expect(clear).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "endpoint" }] })
    }), 60_000)

  it.scoped("every page of a listing is read (pages of 2 blobs here; Azure's are 5,000)", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      const names = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"]
      for (const name of names) yield* Effect.promise(() => azurite.put("models", `set/${name}`, name))
      const work = yield* azureInternal.make({
        access: { _tag: "Url", serviceUrl: azurite.endpoint, account: Azurite.account, accountKey: Redacted.make(Azurite.accountKey), sasToken: undefined },
        container: "models",
        prefix: "set/",
        mask: mask.fromRegExp(/bin$/),
        caBundle: undefined,
        pageSize: 2,
        cacheDir: yield* tempDir,
        concurrency: 2,
        partSize: 16 * MiB,
        partConcurrency: 2,
        multipartThreshold: 64 * MiB,
        stallTimeout: Duration.seconds(10),
        schedule: transfer.defaultSchedule(0),
        maxRetryAfter: Duration.seconds(1),
        offline: false,
        lockTimeout: Duration.seconds(10),
        verify: "changed"
      }).pipe(withEnv())
      const files = yield* Effect.scoped(work.load).pipe(withEnv())
      expect(files.map((file) => file.name)).toEqual(names)
      expect(azurite.log.filter((entry) => entry.url.includes("comp=list")).length).toBe(3)
    }))

  it.scoped("on Node, the SDK's requests go through the library's agents: HTTP_PROXY is honoured", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      yield* Effect.promise(() => azurite.put("models", "iris/model.onnx", model))
      const proxy = yield* TestProxy.make()
      const files = yield* Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
        Effect.map((files) => files.map((file) => (file._tag === "Path" ? fingerprint(fs.readFileSync(file.path)) : file._tag))),
        Effect.provide(NodeStorage.layerAzure({
          container: "models",
          prefix: "iris/",
          fileMask: "onnx$",
          endpoint: azurite.endpoint,
          account: Azurite.account,
          accountKey: Azurite.accountKey,
          cacheDir: yield* tempDir
        })),
        withEnv({ HTTP_PROXY: proxy.url })
      )
      expect(files).toEqual([fingerprint(model)])
      expect(proxy.log.map((entry) => entry.target.split("?")[0])).toEqual([
        `${azurite.endpoint}/models`,
        `${azurite.endpoint}/models/iris/model.onnx`
      ])
    }), 60_000)
})

withServer("AzureStorage: watched (Storage.watch)", (it) => {
  it.scoped("a listing per check on Azurite (need_load_file: true: the checks take the cached files by path)", () =>
    Effect.gen(function*() {
      const azurite = yield* Azurite.make()
      yield* Effect.promise(() => azurite.createContainer("models"))
      const perCheck = yield* followsItsSource({
        storage: Storage.layerFromSelection({
          storage_type: "azure",
          storage_kwargs: {
            storage_uri: "az://models/iris",
            file_mask: String.raw`\.onnx$`,
            endpoint: azurite.endpoint,
            account: Azurite.account,
            account_key: Azurite.accountKey,
            cache_dir: yield* tempDir,
            need_load_file: true
          }
        }).pipe(Layer.provide(env), Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map())))),
        write: (text) => Effect.promise(() => azurite.put("models", "iris/model.onnx", text)),
        requests: () => azurite.log.length
      })
      expect(perCheck).toBe(1)
    }))
})
