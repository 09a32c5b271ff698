import ArgumentParser
import Chunks
import Foundation

/// How progress is shown on stderr.
public enum ProgressStyle: String, ExpressibleByArgument, CaseIterable {
    case auto, bar, plain, json, none
}

/// A pv-style meter: bytes done / total, percent, rate, and an ETA from the recent rate.
/// It polls a `ProgressCounter` from a timer, so the data path never waits for the terminal.
final class ProgressMeter {
    let counter = ProgressCounter()
    /// Bytes found unreadable so far (a rescue copy), shown once there are any.
    var unreadable: ProgressCounter?
    private let style: ProgressStyle
    private let total: UInt64?
    private let label: String
    private var timer: DispatchSourceTimer?
    private let started = monotonicSeconds()
    private var lastBytes: UInt64 = 0
    private var lastTime: Double
    private var recentRate: Double = 0
    private var lastPlain: Double = 0

    init(style: ProgressStyle, total: UInt64?, label: String) {
        var s = style
        if s == .auto { s = isatty(2) != 0 ? .bar : .none }
        self.style = s
        self.total = total
        self.label = label
        lastTime = started
    }

    func start() {
        guard style != .none else { return }
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        let interval: Double = style == .bar ? 0.25 : 1
        t.schedule(deadline: .now() + interval, repeating: interval)
        t.setEventHandler { [weak self] in self?.draw(final: false) }
        timer = t
        t.resume()
    }

    func finish() {
        timer?.cancel()
        timer = nil
        guard style != .none else { return }
        draw(final: true)
    }

    private func draw(final: Bool) {
        let now = monotonicSeconds()
        let done = counter.bytes
        let dt = now - lastTime
        if dt > 0 {
            let r = Double(done &- lastBytes) / dt
            // Exponentially weighted recent rate: the ETA follows speed changes within seconds.
            recentRate = recentRate == 0 ? r : recentRate * 0.7 + r * 0.3
        }
        lastBytes = done
        lastTime = now
        let elapsed = now - started
        let rate = final ? (elapsed > 0 ? Double(done) / elapsed : 0) : recentRate
        var eta: Double? = nil
        // A stalled transfer has no ETA (its decaying rate would promise one in 10^48 seconds).
        if let total, rate >= 1024, done <= total, Double(total - done) / rate < 30 * 86400 { eta = Double(total - done) / rate }
        switch style {
        case .bar:
            var line = "\(label) \(Output.bytes(done))"
            if let total {
                let pct = total == 0 ? 100 : min(100, Int(Double(done) * 100 / Double(total)))
                let width = 24
                let filled = width * pct / 100
                line += " / \(Output.bytes(total)) [" + String(repeating: "=", count: filled)
                    + (filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : "") + "] \(pct)%"
            }
            line += " " + Output.bytes(UInt64(rate)) + "/s"
            if let bad = unreadable?.bytes, bad > 0 { line += " unreadable " + Output.bytes(bad) }
            if final { line += " in " + Output.duration(elapsed) }
            else if let eta { line += " ETA " + Output.duration(eta) }
            Console.err("\r\u{1B}[K" + line + (final ? "\n" : ""))
        case .plain:
            guard final || now - lastPlain >= 5 else { return }
            lastPlain = now
            var line = "\(label): \(Output.bytes(done))"
            if let total { line += " of \(Output.bytes(total))" + (total > 0 ? String(format: " (%.1f%%)", Double(done) * 100 / Double(total)) : "") }
            line += ", " + Output.bytes(UInt64(rate)) + "/s"
            if let bad = unreadable?.bytes, bad > 0 { line += ", unreadable " + Output.bytes(bad) }
            if let eta, !final { line += ", ETA " + Output.duration(eta) }
            Output.stderr(line)
        case .json:
            struct Tick: Encodable { var bytes: UInt64; var total: UInt64?; var rate: Double; var eta: Double?; var elapsed: Double; var done: Bool; var unreadable: UInt64? }
            let bad = unreadable?.bytes ?? 0
            Output.stderr(Output.json(Tick(bytes: done, total: total, rate: rate.rounded(), eta: eta.map { ($0 * 10).rounded() / 10 },
                                           elapsed: (elapsed * 1000).rounded() / 1000, done: final, unreadable: bad > 0 ? bad : nil)))
        case .none, .auto:
            break
        }
    }
}
