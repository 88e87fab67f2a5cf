/**
 * Azurite (Microsoft's Azure Storage emulator, the npm package, pinned to
 * 3.35.0: later releases need Node 22) on 127.0.0.1 for the tests: its blob
 * service in a child process, in memory, with its telemetry off (it would
 * otherwise send to Azure). In front of it, a forwarder on 127.0.0.1 that
 * logs every request (method, URL, Range, If-Match, whether it was signed)
 * and can cut a body short. Blobs are put with the official SDK, as the
 * emulator's well-known development account.
 */
import type { StoragePipelineOptions } from "@azure/storage-blob"
import { BlobServiceClient, newPipeline, StorageSharedKeyCredential } from "@azure/storage-blob"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as child from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { fileURLToPath } from "node:url"

/** Azurite's development account, the same in every installation (documented by Microsoft). */
export const account = "devstoreaccount1"
export const accountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

export interface AzuriteLog {
  readonly method: string
  readonly url: string
  readonly range: string | undefined
  readonly ifMatch: string | undefined
  readonly signed: boolean
}

export interface TestAzurite {
  /** The blob service of the development account: http://127.0.0.1:<port>/devstoreaccount1 */
  readonly endpoint: string
  readonly connectionString: string
  readonly client: BlobServiceClient
  readonly log: Array<AzuriteLog>
  /** Blob downloads (GETs of a blob, not listings), optionally of one name. */
  readonly gets: (name?: string) => Array<AzuriteLog>
  readonly createContainer: (container: string, access?: "blob" | "container") => Promise<void>
  /** A blob; `md5: false` makes it as large uploads do (staged blocks, no Content-MD5). */
  readonly put: (container: string, name: string, body: Uint8Array | string, options?: { readonly md5?: boolean }) => Promise<void>
  /**
   * After `skip` more downloads of blobs, the next `count` are cut off after `bytes` bytes (only those
   * whose range starts at `from`, when given).
   */
  cutAfter: { bytes: number; count: number; skip: number; from?: number } | undefined
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

/**
 * `tls`: Azurite over HTTPS with this certificate, checking bearer tokens as
 * `--oauth basic` does (format, audience, issuer, expiry; not signatures):
 * Microsoft Entra ID's way in. Then there is no forwarder (nothing is logged)
 * and `endpoint` is Azurite's own.
 */
export const make = (
  options: { readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string } } = {}
): Effect.Effect<TestAzurite, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const tlsFiles = options.tls === undefined ? undefined : (() => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-azurite-tls-"))
        fs.writeFileSync(path.join(dir, "cert.pem"), options.tls.cert)
        fs.writeFileSync(path.join(dir, "key.pem"), options.tls.key)
        return { dir, cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem") }
      })()
      const emulator = child.spawn(
        process.execPath,
        [
          path.join(root, "node_modules", "azurite", "dist", "src", "blob", "main.js"),
          "--blobHost", "127.0.0.1",
          "--blobPort", "0",
          "--inMemoryPersistence",
          "--disableTelemetry",
          // The SDK speaks a newer API version than this Azurite knows; the operations used are the same.
          "--skipApiVersionCheck",
          ...(tlsFiles === undefined ? [] : ["--oauth", "basic", "--cert", tlsFiles.cert, "--key", tlsFiles.key])
        ],
        { stdio: ["ignore", "pipe", "pipe"] }
      )
      const port = await new Promise<number>((resolve, reject) => {
        let out = ""
        emulator.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString()
          const match = /listens on https?:\/\/127\.0\.0\.1:(\d+)/.exec(out)
          if (match !== null) resolve(Number(match[1]))
        })
        emulator.once("exit", (code) => reject(new Error(`azurite exited (${code}): ${out}`)))
      })
      if (tlsFiles !== undefined) fs.rmSync(tlsFiles.dir, { recursive: true, force: true })
      const log: Array<AzuriteLog> = []
      const agent = new http.Agent({ keepAlive: true })
      const server: TestAzurite = {
        endpoint: "",
        connectionString: "",
        client: undefined as unknown as BlobServiceClient,
        log,
        gets: (name) =>
          log.filter((entry) =>
            entry.method === "GET" && !entry.url.includes("comp=list") &&
            (name === undefined || new URL(entry.url, "http://x").pathname.endsWith(`/${name}`))
          ),
        createContainer: async (container, access) => {
          await server.client.getContainerClient(container).createIfNotExists(access === undefined ? {} : { access })
        },
        put: async (container, name, body, options) => {
          const bytes = Buffer.from(body)
          const blob = server.client.getContainerClient(container).getBlockBlobClient(name)
          if (options?.md5 === false) {
            const id = Buffer.from("block-0000").toString("base64")
            await blob.stageBlock(id, bytes, bytes.length)
            await blob.commitBlockList([id])
          } else {
            await blob.upload(bytes, bytes.length)
          }
        },
        cutAfter: undefined
      }
      // The forwarder: the SharedKey signature covers the path and headers, not the host, so it passes through.
      const front = http.createServer((req, res) => {
        const entry: AzuriteLog = {
          method: req.method ?? "",
          url: req.url ?? "",
          range: (req.headers["x-ms-range"] ?? req.headers.range) as string | undefined,
          ifMatch: req.headers["if-match"],
          signed: req.headers.authorization !== undefined
        }
        log.push(entry)
        const upstream = http.request(
          { host: "127.0.0.1", port, path: req.url, method: req.method, headers: req.headers, agent },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers)
            const cut = server.cutAfter
            const isDownload = req.method === "GET" && !(req.url ?? "").includes("comp=") && answer.statusCode !== undefined &&
              answer.statusCode < 300 && (cut?.from === undefined || entry.range?.startsWith(`bytes=${cut.from}-`) === true)
            if (cut !== undefined && cut.skip > 0 && isDownload) cut.skip--
            else if (cut !== undefined && cut.count > 0 && isDownload) {
              cut.count--
              let sent = 0
              answer.on("data", (chunk: Buffer) => {
                const room = cut.bytes - sent
                if (room > 0) res.write(chunk.subarray(0, room))
                sent += chunk.length
                if (sent >= cut.bytes) {
                  answer.destroy()
                  res.destroy()
                }
              })
              return
            }
            answer.pipe(res)
          }
        )
        upstream.on("error", () => res.destroy())
        req.pipe(upstream)
      })
      await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve))
      const direct = `${options.tls === undefined ? "http" : "https"}://127.0.0.1:${port}/${account}`
      const endpoint = options.tls === undefined ? `http://127.0.0.1:${(front.address() as AddressInfo).port}/${account}` : direct
      const tlsAgent = options.tls === undefined
        ? undefined
        : new https.Agent({ keepAlive: true, ca: [...tls.rootCertificates, options.tls.ca] })
      Object.assign(server, {
        endpoint,
        connectionString: `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${accountKey};BlobEndpoint=${endpoint};`,
        client: new BlobServiceClient(
          direct,
          newPipeline(new StorageSharedKeyCredential(account, accountKey), (tlsAgent === undefined ? {} : { agent: tlsAgent }) as StoragePipelineOptions)
        )
      })
      return { server, emulator, front, agent }
    }),
    ({ agent, emulator, front }) =>
      Effect.promise(async () => {
        front.closeAllConnections()
        await new Promise<void>((resolve) => front.close(() => resolve()))
        agent.destroy()
        await new Promise<void>((resolve) => {
          if (emulator.exitCode !== null) return resolve()
          emulator.once("exit", () => resolve())
          emulator.kill()
        })
      })
  ).pipe(Effect.map(({ server }) => server))
