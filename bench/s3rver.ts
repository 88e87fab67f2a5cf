// The benchmarks' s3rver: started in a process of its own (bench/s3-server.ts,
// with --openssl-legacy-provider), and a file put into its bucket "bench".
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")

/** s3rver over `directory`, with the bucket "bench"; its endpoint, and how to stop it. */
export const startS3rver = (directory: string) =>
  new Promise<{ readonly endpoint: string; readonly stop: () => void }>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--openssl-legacy-provider", "--import", "tsx", path.join(root, "bench", "s3-server.ts"), directory],
      { stdio: ["ignore", "pipe", "inherit"] }
    )
    let out = ""
    child.stdout.on("data", (chunk) => {
      out += chunk
      if (out.includes("\n")) resolve({ endpoint: JSON.parse(out.split("\n")[0]!).endpoint, stop: () => child.kill() })
    })
    child.on("exit", (code) => reject(new Error(`s3-server.ts exited with ${code}`)))
  })

/** A client of the benchmarks' s3rver. */
export const s3Client = (endpoint: string) =>
  new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    // s3rver would store the aws-chunked framing of a streamed upload with a trailing checksum.
    requestChecksumCalculation: "WHEN_REQUIRED"
  })

/** Puts `file` into the bucket "bench" under `key`. */
export const putFile = (client: S3Client, key: string, file: string) =>
  client.send(new PutObjectCommand({
    Bucket: "bench",
    Key: key,
    Body: fs.createReadStream(file),
    ContentLength: fs.statSync(file).size
  }))
