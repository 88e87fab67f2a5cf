// Peak memory of this process from a chosen moment: Linux's VmHWM (the peak
// RSS), reset to the current RSS by writing "5" to /proc/self/clear_refs.
// Without it (an earlier start-up peak would count), the process's maxRSS.
import * as fs from "node:fs"

let resettable = false

/** Starts the measurement: the peak is the RSS of now. */
export const resetPeak = (): void => {
  try {
    fs.writeFileSync("/proc/self/clear_refs", "5")
    resettable = true
  } catch {
    resettable = false
  }
}

/** The peak RSS since `resetPeak`, in bytes. */
export const peakRss = (): number => {
  if (resettable) {
    const match = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"))
    if (match !== null) return Number(match[1]) * 1024
  }
  return process.resourceUsage().maxRSS * 1024
}
