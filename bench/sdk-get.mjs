// The S3 baseline as a whole process: what a user's script does with the AWS
// SDK to put one object into a file (GetObject, the body piped to the file).
//
//   node bench/sdk-get.mjs <endpoint> <key> <file>     (bucket "bench", s3rver's keys)
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3"
import * as fs from "node:fs"
import { pipeline } from "node:stream/promises"

const [endpoint, key, file] = process.argv.slice(2)
const client = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }
})
const output = await client.send(new GetObjectCommand({ Bucket: "bench", Key: key }))
await pipeline(output.Body, fs.createWriteStream(file))
client.destroy()
