/**
 * The tests' Hub (test/servers/hub.ts) as a process of its own for
 * bench/hub.ts: one model repository, `bench/model`, with one large LFS file
 * (BENCH_HUB_MIB, default 512 MiB), five 2 MiB LFS files and thirty small
 * regular files (configs, tokenizer parts), as a model repository has them.
 * Prints its endpoint as one line of JSON; runs until stdin ends.
 */
import { TestHub } from "../test/servers/hub.js"

const MiB = 1024 * 1024
const sizeMiB = Number(process.env["BENCH_HUB_MIB"] ?? 512)
const bytes = (size: number, seed: number) => {
  const out = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i += 4) out.writeUInt32LE((Math.imul(i, 2654435761) ^ seed) >>> 0, i)
  return out
}

const hub = new TestHub()
await hub.listen()
const files: Record<string, Buffer> = { "model.safetensors": bytes(sizeMiB * MiB, 1) }
for (let i = 0; i < 5; i++) files[`onnx/part-${i}.onnx`] = bytes(2 * MiB, 10 + i)
for (let i = 0; i < 30; i++) files[`config/file-${String(i).padStart(2, "0")}.json`] = Buffer.from(JSON.stringify({ i, pad: "x".repeat(2000 + i) }))
hub.push("bench/model", files)
process.stdout.write(`${JSON.stringify({ endpoint: hub.endpoint, files: Object.keys(files).length, bytes: Object.values(files).reduce((sum, b) => sum + b.length, 0) })}\n`)
process.stdin.resume()
process.stdin.on("end", () => void hub.close().then(() => process.exit(0)))
