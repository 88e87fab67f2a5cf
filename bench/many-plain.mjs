// The reference for many small files: plain Node doing the storage's work for
// each URL, nothing else (no lock, no retries, no progress, no error types):
// GET through one keep-alive agent, 8 at once; sha256 as the body arrives; the
// body written to a staging file and flushed (fsync), renamed into place in a
// folder of its own, its metadata written, the folder flushed.
//
//   node bench/many-plain.mjs <base URL> <count> <out folder>
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"

const [base, count, out] = process.argv.slice(2)
const agent = new http.Agent({ keepAlive: true })
fs.mkdirSync(out, { recursive: true })

const fsync = (fd) => new Promise((resolve, reject) => fs.fsync(fd, (error) => (error ? reject(error) : resolve())))

const one = async (i) => {
  const url = `${base}/many/f${String(i).padStart(5, "0")}.bin`
  const dir = path.join(out, crypto.createHash("sha256").update(url).digest("hex").slice(0, 32))
  fs.mkdirSync(dir, { recursive: true })
  const response = await new Promise((resolve, reject) => http.get(url, { agent }, resolve).on("error", reject))
  if (response.statusCode !== 200) throw new Error(`${url}: HTTP ${response.statusCode}`)
  const hash = crypto.createHash("sha256")
  const chunks = []
  for await (const chunk of response) {
    hash.update(chunk)
    chunks.push(chunk)
  }
  const staging = path.join(dir, "file.partial")
  const fd = fs.openSync(staging, "w")
  try {
    fs.writevSync(fd, chunks)
    await fsync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(staging, path.join(dir, "file.bin"))
  fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ url, sha256: hash.digest("hex") }))
  const folder = fs.openSync(dir, "r")
  try {
    await fsync(folder)
  } finally {
    fs.closeSync(folder)
  }
}

let next = 0
await Promise.all(Array.from({ length: 8 }, async () => {
  while (next < Number(count)) await one(next++)
}))
agent.destroy()
