import * as fs from "node:fs"
const folder = "/tmp/pw/many100k"
for (let k = 0; k < 5; k++) {
  let t = performance.now(); const a = fs.readdirSync(folder); const t1 = performance.now() - t
  t = performance.now(); const d = fs.opendirSync(folder, { bufferSize: 1024 }); const names = []; let e; while ((e = d.readSync()) !== null) names.push(e.name); d.closeSync(); const t2 = performance.now() - t
  t = performance.now(); const d2 = await fs.promises.opendir(folder, { bufferSize: 4096 }); const n2 = []; for await (const x of d2) n2.push(x.name); const t3 = performance.now() - t
  console.log("readdirSync", t1.toFixed(1), "opendirSync loop", t2.toFixed(1), names.length, "opendir async", t3.toFixed(1), n2.length)
}
