import { describe, expect, it, layer } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as fs from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import * as path from "node:path"
import * as oci from "../src/internal/oci.js"
import * as NodeStorage from "../src/NodeStorage.js"
import * as OciStorage from "../src/OciStorage.js"
import * as Storage from "../src/Storage.js"
import * as StorageUri from "../src/StorageUri.js"
import { storageContract } from "../src/Testing.js"
import { archiveOf, bytesOf, contents, fingerprint, platform, tempDir } from "./helpers.js"
import * as Certificates from "./servers/certificates.js"
import * as TestProxy from "./servers/proxy.js"
import * as Registry from "./servers/registry.js"
import { followsItsSource } from "./watching.js"

const quiet = Logger.minimumLogLevel(LogLevel.Error)
const env = Layer.merge(platform, quiet)
const withRegistry = layer(env, { excludeTestServices: true })
const model = bytesOf(3 * 1024 * 1024 + 11, 41)
const config = JSON.stringify({ classes: ["setosa", "versicolor", "virginica"] })

const fixture = (needLoadFile: boolean, cache = true) =>
  Effect.gen(function*() {
    const registry = yield* Registry.make()
    yield* Effect.promise(() =>
      registry.pushArtifact("models/iris", "v1", { "model.onnx": model, "config.json": config }, { unnamed: bytesOf(100, 1) })
    )
    return {
      layer: Storage.layerFromSelection({
        storage_type: "oci",
        storage_kwargs: {
          storage_uri: `oci://${registry.host}/models/iris:v1`,
          insecure: true,
          cache_dir: yield* tempDir,
          docker_config: "/nonexistent/config.json",
          need_load_file: needLoadFile,
          cache
        }
      }).pipe(Layer.provide(env)),
      expected: [
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "config.json", content: new TextEncoder().encode(config) },
        { _tag: needLoadFile ? "Bytes" as const : "Path" as const, name: "model.onnx", content: model }
      ]
    }
  })

storageContract("OciStorage (paths)", fixture(false))
storageContract("OciStorage (bytes)", fixture(true))
storageContract("OciStorage (straight into memory, cache: false)", fixture(true, false))

describe("OciStorage: references", () => {
  it("are read as docker reads them; oci:// URIs give the reference", () => {
    expect(oci.parseReference("ghcr.io/acme/iris:v1")).toEqual(Either.right({ registry: "ghcr.io", repository: "acme/iris", reference: "v1" }))
    expect(oci.parseReference("127.0.0.1:5000/m")).toEqual(Either.right({ registry: "127.0.0.1:5000", repository: "m", reference: "latest" }))
    expect(oci.parseReference("ubuntu")).toEqual(Either.right({ registry: "docker.io", repository: "library/ubuntu", reference: "latest" }))
    const digest = `sha256:${"a".repeat(64)}`
    expect(oci.parseReference(`localhost/a/b:t@${digest}`)).toEqual(Either.right({ registry: "localhost", repository: "a/b", reference: digest }))
    expect(Either.isLeft(oci.parseReference("ghcr.io/Acme/x"))).toBe(true)
    expect(Either.isLeft(oci.parseReference("ghcr.io/a@sha256:1234"))).toBe(true)
    expect(StorageUri.parse("oci://ghcr.io/acme/iris:v1")).toEqual(
      Either.right({ storage_type: "oci", storage_kwargs: { reference: "ghcr.io/acme/iris:v1" } })
    )
    expect(StorageUri.parse("oci://user:secret@ghcr.io/acme/iris")).toMatchObject(Either.left({ _tag: "InvalidStorageOptions" }))
    expect(JSON.stringify(StorageUri.parse("oci://user:secret@ghcr.io/acme/iris"))).not.toContain("secret")
  })
})

withRegistry("OciStorage: a registry on loopback", (it) => {
  const load = (options: Partial<OciStorage.Options> & { readonly reference: string }) =>
    Effect.flatMap(
      Effect.flatMap(tempDir, (cacheDir) => OciStorage.make({ insecure: true, cacheDir, dockerConfig: "/nonexistent/config.json", ...options })),
      contents
    )

  it.scoped("by tag and by digest; a moved tag is followed; an index gives its one manifest or the platform's", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const v1 = yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const byTag = yield* load({ reference: `${registry.host}/m/iris:v1` })
      expect(byTag.map((file) => [file.name, file.bytes])).toEqual([["model.onnx", fingerprint(model)]])
      const byDigest = yield* load({ reference: `${registry.host}/m/iris@${v1.digest}` })
      expect(byDigest.map((file) => file.bytes)).toEqual([fingerprint(model)])
      // The tag moved: the same cache follows it (the digest it named before still gives the old one).
      const cacheDir = yield* tempDir
      const sameCache = (reference: string) =>
        Effect.flatMap(OciStorage.make({ reference, insecure: true, cacheDir, dockerConfig: "/nonexistent" }), contents)
      yield* sameCache(`${registry.host}/m/iris:moving`).pipe(Effect.flip, Effect.ignore)
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "moving", { "model.onnx": "first" }))
      expect((yield* sameCache(`${registry.host}/m/iris:moving`)).map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode("first"))])
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "moving", { "model.onnx": "second" }))
      expect((yield* sameCache(`${registry.host}/m/iris:moving`)).map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode("second"))])
      // Two platforms in an index: the one asked for.
      const arm = yield* Effect.promise(() => registry.pushArtifact("m/iris", "arm", { "model.onnx": "arm weights" }))
      yield* Effect.promise(() =>
        registry.pushIndex("m/iris", "multi", [
          { digest: v1.digest, size: v1.size, platform: { os: "linux", architecture: "amd64" } },
          { digest: arm.digest, size: arm.size, platform: { os: "linux", architecture: "arm64" } }
        ])
      )
      const onArm = yield* load({ reference: `${registry.host}/m/iris:multi`, platform: "linux/arm64" })
      expect(onArm.map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode("arm weights"))])
      const none = yield* Effect.flip(load({ reference: `${registry.host}/m/iris:multi`, platform: "linux/s390x" }))
      expect(none).toMatchObject({ _tag: "RemoteNotFound", reason: expect.stringContaining("linux/amd64, linux/arm64") })
      yield* Effect.promise(() => registry.pushIndex("m/iris", "single", [{ digest: arm.digest, size: arm.size }]))
      const single = yield* load({ reference: `${registry.host}/m/iris:single` })
      expect(single.map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode("arm weights"))])
      // Missing: a typed error.
      const missing = yield* Effect.flip(load({ reference: `${registry.host}/m/iris:nope` }))
      expect(missing._tag).toBe("RemoteNotFound")
    }))

  it.scoped("a tampered blob is a ChecksumMismatch, never delivered; a large blob comes in ranged parts", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const big = bytesOf(5 * 1024 * 1024 + 3, 5)
      const pushed = yield* Effect.promise(() => registry.pushArtifact("m/big", "v1", { "weights.bin": big }))
      const inParts = yield* load({ reference: `${registry.host}/m/big:v1`, multipartThresholdMb: 1, partSizeMb: 1 })
      expect(inParts.map((file) => file.bytes)).toEqual([fingerprint(big)])
      const file = registry.blobFile(pushed.layers["weights.bin"]!)
      const tampered = fs.readFileSync(file)
      tampered[1000] = tampered[1000]! ^ 0xff
      fs.writeFileSync(file, tampered)
      const cacheDir = yield* tempDir
      const error = yield* Effect.flip(Effect.flatMap(
        OciStorage.make({ reference: `${registry.host}/m/big:v1`, insecure: true, cacheDir, retries: 0, dockerConfig: "/nonexistent" }),
        contents
      ))
      expect(error).toMatchObject({ _tag: "ChecksumMismatch", algorithm: expect.stringContaining("sha256") })
      expect(fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((name) => name.endsWith("weights.bin"))).toEqual([])
    }))

  it.scoped("htpasswd (Basic): refused without credentials; kwargs or the Docker config file's; never shown", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make({ auth: { kind: "basic", username: "alice", password: "s3cret-pw" } })
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const reference = `${registry.host}/m/iris:v1`
      const refused = yield* Effect.flip(load({ reference }))
      expect(refused).toMatchObject({ _tag: "Unauthorized", status: 401 })
      const wrong = yield* Effect.flip(load({ reference, username: "alice", password: "nope" }))
      expect(wrong._tag).toBe("Unauthorized")
      expect(JSON.stringify(wrong)).not.toContain("nope")
      const withKwargs = yield* load({ reference, username: "alice", password: "s3cret-pw" })
      expect(withKwargs.map((file) => file.bytes)).toEqual([fingerprint(model)])
      const dir = yield* tempDir
      fs.writeFileSync(
        path.join(dir, "config.json"),
        JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from("alice:s3cret-pw").toString("base64") } } })
      )
      const fromConfig = yield* load({ reference, dockerConfig: path.join(dir, "config.json") })
      expect(fromConfig.map((file) => file.bytes)).toEqual([fingerprint(model)])
    }))

  it.scoped("token auth: the challenge's realm, service and scope; anonymous pull when the service allows it", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make({ auth: { kind: "token", username: "bob", password: "tok-pw", anonymousPull: false } })
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const reference = `${registry.host}/m/iris:v1`
      registry.tokenRequests.length = 0
      const refused = yield* Effect.flip(load({ reference }))
      expect(refused._tag).toBe("Unauthorized")
      const files = yield* load({ reference, username: "bob", password: "tok-pw" })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(registry.tokenRequests).toContainEqual({ scope: "repository:m/iris:pull", authenticated: true })
      // One token per load: asked for once, used for the manifest and every blob.
      expect(registry.tokenRequests.filter((one) => one.authenticated).length).toBe(1)

      const open = yield* Registry.make({ auth: { kind: "token", username: "bob", password: "tok-pw", anonymousPull: true } })
      yield* Effect.promise(() => open.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const anonymous = yield* load({ reference: `${open.host}/m/iris:v1` })
      expect(anonymous.map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(open.tokenRequests.at(-1)).toEqual({ scope: "repository:m/iris:pull", authenticated: false })
    }))

  it.scoped("a blob redirected to storage on another origin (as GHCR, ECR, Docker Hub do) is fetched without the token", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make({ auth: { kind: "token", username: "bob", password: "tok-pw" } })
      const big = bytesOf(3 * 1024 * 1024, 77)
      const pushed = yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "weights.bin": big }))
      // The store: serves blobs (ranges too) and records the Authorization header each request carried.
      const seen: Array<string | undefined> = []
      const store = http.createServer((req, res) => {
        seen.push(req.headers.authorization)
        const digest = decodeURIComponent(req.url!.slice("/blob/".length))
        const bytes = fs.readFileSync(registry.blobFile(digest))
        const range = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? "")
        if (range === null) return void res.writeHead(200, { "content-length": bytes.length }).end(bytes)
        const [start, end] = [Number(range[1]), Number(range[2])]
        res.writeHead(206, { "content-range": `bytes ${start}-${end}/${bytes.length}`, "content-length": end - start + 1 })
          .end(bytes.subarray(start, end + 1))
      })
      // The registry's front: blobs answered with a redirect to the store, everything else passed on.
      const front = http.createServer((req, res) => {
        const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]+)/.exec(req.url!)
        if (blob !== null && req.headers.authorization !== undefined) {
          return void res.writeHead(307, { location: `http://127.0.0.1:${(store.address() as net.AddressInfo).port}/blob/${blob[1]}` }).end()
        }
        const upstream = http.request(`${registry.endpoint}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode!, answer.headers)
          answer.pipe(res)
        })
        req.pipe(upstream)
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => Promise.all([store, front].map((server) => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))))),
        () => Effect.sync(() => [store, front].forEach((server) => server.close()))
      )
      const reference = `127.0.0.1:${(front.address() as net.AddressInfo).port}/m/iris:v1`
      const files = yield* load({ reference, username: "bob", password: "tok-pw", multipartThresholdMb: 1, partSizeMb: 1 })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(big)])
      expect(seen.length).toBeGreaterThan(1)
      expect(seen.every((header) => header === undefined)).toBe(true)
      expect(pushed.layers["weights.bin"]).toMatch(/^sha256:/)
    }))

  it.scoped("mirrors: a pull-through cache is tried first and fills; a dead mirror falls back to the registry", () =>
    Effect.gen(function*() {
      const upstream = yield* Registry.make()
      yield* Effect.promise(() => upstream.pushArtifact("m/iris", "v1", { "model.onnx": model, "config.json": config }))
      const mirror = yield* Registry.make({ proxyOf: { endpoint: upstream.endpoint } })
      const reference = `${upstream.host}/m/iris:v1`
      const files = yield* load({ reference, mirrors: [mirror.endpoint] })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(new TextEncoder().encode(config)), fingerprint(model)])
      // The mirror fetched and kept the blobs (it served them).
      const kept = fs.readdirSync(path.join(mirror.root, "docker", "registry", "v2", "blobs", "sha256"), { recursive: true })
        .map(String).filter((name) => name.endsWith("data"))
      expect(kept.length).toBeGreaterThanOrEqual(2)
      const dead = yield* load({ reference, mirrors: ["http://127.0.0.1:9"] })
      expect(dead.map((file) => file.bytes)).toEqual(files.map((file) => file.bytes))
    }))

  it.scoped("blobs are shared between the tags and repositories of one registry: a second reference links, never fetches, them", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const big = bytesOf(2 * 1024 * 1024, 9)
      const pushed = yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "weights.bin": big }))
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1-copy", { "weights.bin": big }))
      yield* Effect.promise(() => registry.pushArtifact("other/iris", "v1", { "weights.bin": big, "extra.txt": "x" }))
      const cacheDir = yield* tempDir
      const logs: Array<string> = []
      const logger = Layer.merge(
        Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logs.push(String(message)))),
        Logger.minimumLogLevel(LogLevel.Debug)
      )
      const fetchOf = (reference: string) =>
        Effect.flatMap(OciStorage.make({ reference, insecure: true, cacheDir, dockerConfig: "/nonexistent" }), contents).pipe(
          Effect.provide(logger)
        )
      const first = yield* fetchOf(`${registry.host}/m/iris:v1`)
      // The blob, in the registry, is now broken: a reference that fetched it would fail.
      fs.writeFileSync(registry.blobFile(pushed.layers["weights.bin"]!), "broken")
      const copy = yield* fetchOf(`${registry.host}/m/iris:v1-copy`)
      const other = yield* fetchOf(`${registry.host}/other/iris:v1`)
      expect(copy.map((file) => file.bytes)).toEqual(first.map((file) => file.bytes))
      expect(other.find((file) => file.name === "weights.bin")?.bytes).toBe(first[0]!.bytes)
      expect(logs.filter((line) => line.includes("another reference's")).length).toBe(2)
      // One copy on disk, linked from each snapshot.
      expect(fs.statSync(copy[0]!.path).ino).toBe(fs.statSync(first[0]!.path).ino)
    }))

  it.scoped("the registry's credentials never go to a mirror: it is asked anonymously, and passed over when it refuses", () =>
    Effect.gen(function*() {
      const upstream = yield* Registry.make({ auth: { kind: "basic", username: "alice", password: "upstream-pw" } })
      yield* Effect.promise(() => upstream.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const seen: Array<string | undefined> = []
      const mirror = http.createServer((req, res) => {
        seen.push(req.headers.authorization)
        res.writeHead(401, { "www-authenticate": "Basic realm=\"mirror\"" }).end()
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => mirror.listen(0, "127.0.0.1", resolve))),
        () => Effect.sync(() => mirror.close())
      )
      const files = yield* load({
        reference: `${upstream.host}/m/iris:v1`,
        username: "alice",
        password: "upstream-pw",
        mirrors: [`http://127.0.0.1:${(mirror.address() as net.AddressInfo).port}`]
      })
      expect(files.map((file) => file.bytes)).toEqual([fingerprint(model)])
      expect(seen.length).toBeGreaterThan(0)
      expect(seen.every((header) => header === undefined)).toBe(true)
    }))

  it.scoped("an image (a modelcar, pushed by skopeo): /models made of its layers in order, whiteouts applied, the rest ignored", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const reference = `${registry.host}/m/modelcar:v1`
      yield* Effect.promise(() =>
        registry.pushImage("m/modelcar", "v1", [
          // A base layer: a shell and its absolute link (outside /models: never unpacked).
          { "bin/busybox": "#!/bin/sh\n", "bin/sh": { link: "/bin/busybox" }, "etc/os-release": "ID=test\n" },
          { "models/model.onnx": "old weights", "models/old.bin": "stale", "models/tok/vocab.txt": "a b" },
          { "models/model.onnx": model, "models/.wh.old.bin": "", "models/config.json": config }
        ])
      )
      const files = yield* load({ reference })
      expect(files.map((file) => [file.name, file.bytes])).toEqual([
        ["config.json", fingerprint(new TextEncoder().encode(config))],
        ["model.onnx", fingerprint(model)],
        ["tok/vocab.txt", fingerprint(new TextEncoder().encode("a b"))]
      ])
      // The mask selects among the image's files; another path of it can be asked for.
      expect((yield* load({ reference, fileMask: String.raw`\.onnx$` })).map((file) => file.name)).toEqual(["model.onnx"])
      expect((yield* load({ reference, pathInImage: "/etc" })).map((file) => file.name)).toEqual(["os-release"])
      const missing = yield* Effect.flip(load({ reference, pathInImage: "/opt/none" }))
      expect(missing).toMatchObject({ _tag: "RemoteNotFound", reason: expect.stringContaining("/opt/none") })
    }))

  it.scoped("networks of companies: HTTP_PROXY is honoured; a registry over HTTPS with a company CA (ca_bundle)", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      yield* Effect.promise(() => registry.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const proxy = yield* TestProxy.make()
      const viaProxy = yield* Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
        Effect.map((files) => files.map((file) => (file._tag === "Path" ? fingerprint(fs.readFileSync(file.path)) : file._tag))),
        Effect.provide(NodeStorage.layerOci({
          reference: `${registry.host}/m/iris:v1`,
          insecure: true,
          cacheDir: yield* tempDir,
          dockerConfig: "/nonexistent"
        })),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["HTTP_PROXY", proxy.url]])))
      )
      expect(viaProxy).toEqual([fingerprint(model)])
      expect(proxy.log.map((entry) => new URL(entry.target).pathname)).toEqual(
        expect.arrayContaining([`/v2/m/iris/manifests/v1`, expect.stringMatching(/^\/v2\/m\/iris\/blobs\/sha256:/)])
      )

      const certificates = yield* Certificates.make
      const secure = yield* Registry.make({ tls: { cert: certificates.cert, key: certificates.key } })
      yield* Effect.promise(() => secure.pushArtifact("m/iris", "v1", { "model.onnx": model }))
      const reference = `${secure.host}/m/iris:v1`
      const untrusted = yield* Effect.flip(load({ reference, insecure: false, retries: 0 }))
      expect(untrusted._tag).toBe("TlsFailure")
      const trusted = yield* load({ reference, insecure: false, caBundle: certificates.caFile })
      expect(trusted.map((file) => file.bytes)).toEqual([fingerprint(model)])
    }))

  it.scoped("archives among the files unpack; offline from the last snapshot", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const archive = yield* archiveOf("tar.gz", { "model.onnx": model, "tokenizer/vocab.txt": "a b c" })
      yield* Effect.promise(() => registry.pushArtifact("m/packed", "v1", { "model.tar.gz": archive }))
      const cacheDir = yield* tempDir
      const options = {
        reference: `${registry.host}/m/packed:v1`,
        insecure: true,
        cacheDir,
        unpack: "auto",
        dockerConfig: "/nonexistent"
      } as const
      const files = yield* Effect.flatMap(OciStorage.make(options), contents)
      expect(files.map((file) => file.name)).toEqual(["model.onnx", "tokenizer/vocab.txt"])
      const offline = yield* Effect.flatMap(OciStorage.make({ ...options, offline: true }), contents)
      expect(offline).toEqual(files)
    }))
})

withRegistry("OciStorage: watched (Storage.watch)", (it) => {
  it.scoped("one manifest request per check (counted by a proxy in front): a new version when the tag moved", () =>
    Effect.gen(function*() {
      const registry = yield* Registry.make()
      const proxy = yield* TestProxy.make()
      const perCheck = yield* followsItsSource({
        storage: NodeStorage.layerOci({
          reference: `${registry.host}/m/iris:latest`,
          insecure: true,
          cacheDir: yield* tempDir,
          dockerConfig: "/nonexistent"
        }).pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["HTTP_PROXY", proxy.url]]))))),
        write: (text) => Effect.promise(() => registry.pushArtifact("m/iris", "latest", { "model.onnx": text })),
        requests: () => proxy.log.length
      })
      expect(perCheck).toBe(1)
      expect(proxy.log.filter((entry) => entry.method === "GET" && /\/blobs\//.test(entry.target)).length).toBe(2)
    }))
})
