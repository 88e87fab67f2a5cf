import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as HttpStorage from "../src/HttpStorage.js"
import * as NodeStorage from "../src/NodeStorage.js"
import * as Storage from "../src/Storage.js"
import { bytesOf, tempDir, writeFiles } from "./helpers.js"
import * as Certificates from "./servers/certificates.js"
import * as TestServer from "./servers/http.js"
import * as TestProxy from "./servers/proxy.js"
import * as S3 from "./servers/s3.js"

const sha256 = (bytes: Uint8Array) => crypto.createHash("sha256").update(bytes).digest("hex")

const MiB = 1024 * 1024

describe("NodeStorage", () => {
  it("the collector works without --expose-gc", () => {
    expect(process.execArgv).not.toContain("--expose-gc")
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe("undefined")
    // Runs V8's collector through a context of its own; a second call reuses it.
    Effect.runSync(NodeStorage.garbageCollector.collect)
    Effect.runSync(NodeStorage.garbageCollector.collect)
    expect(typeof (globalThis as { gc?: unknown }).gc).toBe("undefined")
  })

  it.scoped("after the scope, the memory of the bytes is returned, even with a view kept by mistake", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      writeFiles(dir, { "model.pckl": bytesOf(64 * MiB, 5) })
      yield* NodeStorage.garbageCollector.collect
      const before = process.memoryUsage().arrayBuffers
      let kept: Uint8Array | undefined
      const during = yield* Effect.scoped(Effect.gen(function*() {
        const storage = yield* Storage.Storage
        const [file] = yield* storage.load
        kept = file?._tag === "Bytes" ? file.bytes : undefined
        return process.memoryUsage().arrayBuffers
      })).pipe(Effect.provide(NodeStorage.layerDisk({ pathToFiles: path.join(dir, "model.pckl"), needLoadFile: true })))
      const after = process.memoryUsage().arrayBuffers
      expect(during - before).toBeGreaterThan(60 * MiB)
      expect(kept?.byteLength).toBe(0)
      expect(after - before).toBeLessThan(16 * MiB)
    }))
})

describe("NodeStorage: the networks of companies (a real proxy and TLS on loopback)", () => {
  const model = bytesOf(300 * 1024, 51)
  const withEnv = (env: Record<string, string>) =>
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
  const load = (options: HttpStorage.Options) =>
    Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
      Effect.map((files) => files.map((file) => (file._tag === "Path" ? sha256(fs.readFileSync(file.path)) : file._tag))),
      Effect.provide(NodeStorage.layerHttp(options))
    )

  it.scoped("HTTP_PROXY: plain HTTP goes to the proxy in absolute form; NO_PROXY exempts a host", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make()
      const server = yield* TestServer.make()
      server.put("/m.onnx", model)
      const cacheDir = yield* tempDir
      const url = server.url("/m.onnx")
      expect(yield* load({ urls: url, cacheDir }).pipe(withEnv({ HTTP_PROXY: proxy.url }))).toEqual([sha256(model)])
      expect(proxy.log).toEqual([{ method: "GET", target: url, authorization: undefined }])
      // Lower case works too; NO_PROXY (a host, a domain suffix, host:port) bypasses it.
      for (const noProxy of ["127.0.0.1", "example.com,127.0.0.1", `127.0.0.1:${server.port}`, "*"]) {
        yield* load({ urls: url, cacheDir: yield* tempDir }).pipe(withEnv({ http_proxy: proxy.url, no_proxy: noProxy }))
      }
      expect(proxy.log).toHaveLength(1)
    }))

  it.scoped("HTTPS_PROXY: HTTPS goes through a CONNECT tunnel, with the proxy's credentials, never shown", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make(`Basic ${Buffer.from("corp:pr0xy-pass").toString("base64")}`)
      const certificates = yield* Certificates.make
      const server = yield* TestServer.make({ tls: certificates })
      server.put("/m.onnx", model)
      const url = server.url("/m.onnx")
      const proxyUrl = proxy.url.replace("http://", "http://corp:pr0xy-pass@")
      const files = yield* load({ urls: url, cacheDir: yield* tempDir, caBundle: certificates.caFile }).pipe(
        withEnv({ HTTPS_PROXY: proxyUrl })
      )
      expect(files).toEqual([sha256(model)])
      expect(proxy.log.map((entry) => [entry.method, entry.target])).toEqual([["CONNECT", `127.0.0.1:${server.port}`]])
      expect(server.requests("/m.onnx").map((entry) => entry.status)).toEqual([200])
      // A malformed proxy is an invalid option naming the variable, never echoing its password.
      const bad = yield* Effect.flip(load({ urls: url, cacheDir: yield* tempDir }).pipe(withEnv({ HTTPS_PROXY: "http://corp:pr0xy-pass@[::1" })))
      expect(bad).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "HTTPS_PROXY" }] })
      expect(bad.message).not.toContain("pr0xy-pass")
    }))

  it.scoped("a proxy password with a stray %: an invalid option naming the variable, never the password", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make()
      for (const name of ["HTTPS_PROXY", "HTTP_PROXY"]) {
        const bad = yield* Effect.flip(
          load({ urls: "http://127.0.0.1:9/m.onnx", cacheDir: yield* tempDir }).pipe(
            withEnv({ [name]: proxy.url.replace("http://", "http://corp:50%off@") })
          )
        )
        expect(bad).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: name }] })
        expect(bad.message).toContain("%25")
        expect(bad.message).not.toContain("50%off")
      }
      expect(proxy.log).toEqual([])
    }))

  it.scoped("a proxy that refuses its credentials: Unauthorized (407) at once, for CONNECT (https) as for plain http", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make(`Basic ${Buffer.from("corp:right").toString("base64")}`)
      const certificates = yield* Certificates.make
      const secure = yield* TestServer.make({ tls: certificates })
      const plain = yield* TestServer.make()
      secure.put("/m.onnx", model)
      plain.put("/m.onnx", model)
      const wrong = proxy.url.replace("http://", "http://corp:wr0ng-pass@")
      const viaHttps = yield* Effect.flip(
        load({ urls: secure.url("/m.onnx"), cacheDir: yield* tempDir, caBundle: certificates.caFile, retries: 3 }).pipe(
          withEnv({ HTTPS_PROXY: wrong })
        )
      )
      const viaHttp = yield* Effect.flip(
        load({ urls: plain.url("/m.onnx"), cacheDir: yield* tempDir, retries: 3 }).pipe(withEnv({ HTTP_PROXY: wrong }))
      )
      for (const error of [viaHttps, viaHttp]) {
        expect(error).toMatchObject({ _tag: "Unauthorized", status: 407 })
        expect(error.message).toContain("HTTPS_PROXY")
        expect(error.message).not.toContain("wr0ng-pass")
      }
      // One attempt each: a retry cannot mend credentials.
      expect(proxy.log.map((entry) => entry.method)).toEqual(["CONNECT", "GET"])
      expect(secure.log).toEqual([])
      expect(plain.log).toEqual([])
    }))

  it.scoped("https:// to a plain-HTTP port: TlsFailure at once, saying so, not a network failure after retries", () =>
    Effect.gen(function*() {
      const plain = yield* TestServer.make()
      plain.put("/m.onnx", model)
      const url = plain.url("/m.onnx").replace("http://", "https://")
      const error = yield* Effect.flip(load({ urls: url, cacheDir: yield* tempDir, retries: 5 }).pipe(withEnv({})))
      expect(error).toMatchObject({ _tag: "TlsFailure", code: "ERR_SSL_WRONG_VERSION_NUMBER" })
      expect(error.message).toContain("does not speak TLS")
    }))

  it.scoped("a warm load's revalidation (node:http's own request) goes through the proxy and CA, with the caller's headers", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make()
      const certificates = yield* Certificates.make
      const server = yield* TestServer.make({ tls: certificates, authorization: "Bearer s3cret" })
      server.put("/m.onnx", model)
      const url = server.url("/m.onnx")
      const options = { urls: url, cacheDir: yield* tempDir, caBundle: certificates.caFile, headers: { authorization: "Bearer s3cret" } }
      const viaProxy = withEnv({ HTTPS_PROXY: proxy.url })
      expect(yield* load(options).pipe(viaProxy)).toEqual([sha256(model)])
      expect(yield* load(options).pipe(viaProxy)).toEqual([sha256(model)])
      // The 304 came through the tunnel, asked with the ETag and the caller's Authorization.
      expect(proxy.log.map((entry) => entry.method)).toEqual(["CONNECT", "CONNECT"])
      expect(server.requests("/m.onnx").map((entry) => [entry.status, entry.ifNoneMatch !== undefined, entry.authorization]))
        .toEqual([[200, false, "Bearer s3cret"], [304, true, "Bearer s3cret"]])
      // A new version: the revalidation's 200 is the download, under the lock (one request).
      const next = bytesOf(300 * 1024, 52)
      server.put("/m.onnx", next)
      expect(yield* load(options).pipe(viaProxy)).toEqual([sha256(next)])
      expect(server.requests("/m.onnx").slice(2).map((entry) => entry.status)).toEqual([200])
    }))

  it.scoped("a certificate from an unknown CA is TlsFailure at once (no retry); ca_bundle or SSL_CERT_FILE trusts it", () =>
    Effect.gen(function*() {
      const certificates = yield* Certificates.make
      const server = yield* TestServer.make({ tls: certificates })
      server.put("/m.onnx", model)
      const url = server.url("/m.onnx")
      const error = yield* Effect.flip(load({ urls: url, cacheDir: yield* tempDir, retries: 3 }).pipe(withEnv({})))
      expect(error).toMatchObject({ _tag: "TlsFailure", code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" })
      expect(error.message).toContain("ca_bundle")
      expect(server.log).toEqual([])
      expect(yield* load({ urls: url, cacheDir: yield* tempDir, caBundle: certificates.caFile }).pipe(withEnv({}))).toEqual([
        sha256(model)
      ])
      expect(yield* load({ urls: url, cacheDir: yield* tempDir }).pipe(withEnv({ SSL_CERT_FILE: certificates.caFile })))
        .toEqual([sha256(model)])
      expect(yield* load({ urls: url, cacheDir: yield* tempDir }).pipe(withEnv({ AWS_CA_BUNDLE: certificates.caFile })))
        .toEqual([sha256(model)])
      const missing = yield* Effect.flip(load({ urls: url, caBundle: "/nonexistent/ca.pem" }))
      expect(missing).toMatchObject({ _tag: "InvalidStorageOptions", issues: [{ field: "ca_bundle" }] })
      // A bundle is read once, and again when it changed on disk (a rotated company CA): each load trusts what
      // the file holds then.
      const bundle = path.join(yield* tempDir, "bundle.pem")
      fs.copyFileSync(certificates.caFile, bundle)
      const viaBundle = Effect.suspend(() => load({ urls: url, cacheDir: bundle + ".cache", retries: 0 }).pipe(withEnv({ SSL_CERT_FILE: bundle })))
      expect(yield* viaBundle).toEqual([sha256(model)])
      fs.writeFileSync(bundle, (yield* Certificates.make).ca)
      fs.rmSync(bundle + ".cache", { recursive: true })
      expect(yield* Effect.flip(viaBundle)).toMatchObject({ _tag: "TlsFailure" })
      fs.copyFileSync(certificates.caFile, bundle)
      expect(yield* viaBundle).toEqual([sha256(model)])
    }))

  it.scoped("S3 through HTTP_PROXY, with the endpoint from AWS_ENDPOINT_URL_S3 (path-style) and no region given", () =>
    Effect.gen(function*() {
      const proxy = yield* TestProxy.make()
      const s3 = yield* S3.make(["models"])
      yield* Effect.promise(() => s3.put("models", "iris/model.onnx", model))
      const files = yield* Effect.scoped(Effect.flatMap(Storage.Storage, (storage) => storage.load)).pipe(
        Effect.map((files) => files.map((file) => (file._tag === "Path" ? sha256(fs.readFileSync(file.path)) : file._tag))),
        Effect.provide(NodeStorage.layerS3({
          bucket: "models",
          prefix: "iris/",
          fileMask: "onnx$",
          accessKeyId: S3.accessKeyId,
          secretAccessKey: S3.secretAccessKey,
          cacheDir: yield* tempDir
        })),
        withEnv({ HTTP_PROXY: proxy.url, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_CONFIG_FILE: "/nonexistent" })
      )
      expect(files).toEqual([sha256(model)])
      // Path-style (the bucket in the path, not in the host name), through the proxy.
      expect(proxy.log.map((entry) => entry.target)).toEqual([
        `${s3.endpoint}/models/?list-type=2&prefix=iris%2F`,
        `${s3.endpoint}/models/iris/model.onnx?x-id=GetObject`
      ])
    }))
})
