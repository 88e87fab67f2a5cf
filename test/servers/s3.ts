/**
 * A real S3-compatible server on 127.0.0.1 (s3rver, in-process) for the tests:
 * objects are put through the AWS SDK, and every request is logged. s3rver
 * checks access key ids, not signatures; its paged listings need node's
 * --openssl-legacy-provider (set in vitest.config.ts).
 */
import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import S3rver from "s3rver"

export const accessKeyId = "S3RVER"
export const secretAccessKey = "S3RVER"

export interface RequestLog {
  readonly method: string
  readonly url: string
  readonly range: string | undefined
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
}

export interface TestS3Server {
  readonly endpoint: string
  readonly log: Array<RequestLog>
  readonly put: (bucket: string, key: string, body: Uint8Array | string) => Promise<void>
  readonly remove: (bucket: string, key: string) => Promise<void>
  readonly gets: (key?: string) => Array<RequestLog>
}

export const make = (buckets: ReadonlyArray<string>): Effect.Effect<TestS3Server, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const directory = fs.mkdtempSync(path.join(os.tmpdir(), "mlup-s3rver-"))
      const server = new S3rver({
        port: 0,
        address: "127.0.0.1",
        silent: true,
        directory,
        configureBuckets: buckets.map((name) => ({ name })),
        vhostBuckets: false
      })
      const { port } = await server.run()
      const endpoint = `http://127.0.0.1:${port}`
      const log: Array<RequestLog> = []
      server.httpServer.on("request", (req) =>
        log.push({ method: req.method ?? "", url: req.url ?? "", range: req.headers.range, headers: req.headers }))
      const client = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId, secretAccessKey }
      })
      return {
        directory,
        server,
        client,
        endpoint,
        log,
        put: async (bucket: string, key: string, body: Uint8Array | string) => {
          await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))
        },
        remove: async (bucket: string, key: string) => {
          await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
        },
        gets: (key?: string) =>
          log.filter((entry) =>
            entry.method === "GET" && !entry.url.includes("list-type") &&
            (key === undefined || new URL(entry.url, endpoint).pathname.endsWith(`/${key}`))
          )
      }
    }),
    ({ client, directory, server }) =>
      Effect.promise(async () => {
        client.destroy()
        server.httpServer.closeAllConnections()
        await server.close()
        fs.rmSync(directory, { recursive: true, force: true })
      })
  )
