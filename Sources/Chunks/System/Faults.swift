import Foundation
import Glibc
import Synchronization

/// Faults forced at chosen system calls, so tests drive ENOSPC, EIO, EINVAL and short reads and
/// writes deterministically through the real binary (the paths a healthy disk never takes).
///
///     FERRY_FAULTS="RULE[,RULE...]"   RULE = OP:WHAT[:from=BYTES][:to=BYTES][:after=N][:times=K]
///
/// - OP: pread, pwrite, read, write, fdatasync, open, ftruncate, punch, zeroout.
/// - WHAT: an errno name (EIO, ENOSPC, EINVAL, EROFS, EACCES, EBUSY, EPERM, ENXIO, EFBIG) to fail
///   the call with, or `short` to let it move only part of the bytes asked (a multiple of 4096
///   where possible, as O_DIRECT needs), as the kernel may.
/// - from=BYTES, to=BYTES: only calls at an offset in [from, to) (positioned calls).
/// - after=N: let the first N matching calls through.
/// - times=K: fault at most K calls (default: every matching call).
///
/// A fault can only make a call fail or do less; it never reports work that was not done, so it
/// cannot turn into a false "OK". Without FERRY_FAULTS, each call pays one load and a branch.
public final class Faults: Sendable {
    public enum Op: String, Sendable, CaseIterable {
        case pread, pwrite, read, write, fdatasync, open, ftruncate, punch, zeroout
    }

    public enum Action: Equatable, Sendable {
        case fail(Int32)
        case short
    }

    struct Rule: Sendable {
        var op: Op
        var action: Action
        var from: UInt64 = 0
        var to = UInt64.max
        var after = 0
        var times = Int.max
    }

    private let rules: [Rule]
    /// Per rule: matching calls seen, faults injected.
    private let counts: Mutex<[(seen: Int, injected: Int)]>

    init(rules: [Rule]) {
        self.rules = rules
        counts = Mutex(Array(repeating: (0, 0), count: rules.count))
    }

    /// The faults this process runs with (from FERRY_FAULTS), or nil.
    public static let active: Faults? = {
        guard let spec = ProcessInfo.processInfo.environment["FERRY_FAULTS"], !spec.isEmpty else { return nil }
        do {
            return try parse(spec)
        } catch {
            Console.err("ferry: FERRY_FAULTS: \(error)\n")
            exit(64)
        }
    }()

    static let errnoNames: [String: Int32] = [
        "EIO": EIO, "ENOSPC": ENOSPC, "EINVAL": EINVAL, "EROFS": EROFS, "EACCES": EACCES, "EBUSY": EBUSY,
        "EPERM": EPERM, "ENXIO": ENXIO, "EFBIG": EFBIG, "EDQUOT": EDQUOT,
    ]

    public static func parse(_ spec: String) throws -> Faults {
        var rules: [Rule] = []
        for text in spec.split(separator: ",") {
            let parts = text.split(separator: ":").map(String.init)
            guard parts.count >= 2, let op = Op(rawValue: parts[0]) else {
                throw FerryError(.usage, "'\(text)' is not OP:WHAT (OP one of \(Op.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let action: Action
            if parts[1] == "short" { action = .short }
            else if let e = errnoNames[parts[1]] { action = .fail(e) }
            else { throw FerryError(.usage, "'\(parts[1])' in '\(text)' is neither `short` nor a known errno name") }
            var rule = Rule(op: op, action: action)
            for option in parts.dropFirst(2) {
                let kv = option.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, let n = UInt64(kv[1]) else { throw FerryError(.usage, "'\(option)' in '\(text)' is not KEY=NUMBER") }
                switch kv[0] {
                case "from": rule.from = n
                case "to": rule.to = n
                case "after": rule.after = Int(n)
                case "times": rule.times = Int(n)
                default: throw FerryError(.usage, "'\(kv[0])' in '\(text)' is not from, to, after or times")
                }
            }
            guard rule.from < rule.to else { throw FerryError(.usage, "'\(text)': from must be below to") }
            rules.append(rule)
        }
        return Faults(rules: rules)
    }

    /// The fault to apply to this call, if any rule matches and still has faults to give.
    public func inject(_ op: Op, offset: UInt64?) -> Action? {
        counts.withLock { counts -> Action? in
            for (i, rule) in rules.enumerated() where rule.op == op && (rule.from..<rule.to).contains(offset ?? 0) {
                counts[i].seen += 1
                guard counts[i].seen > rule.after, counts[i].injected < rule.times else { continue }
                counts[i].injected += 1
                return rule.action
            }
            return nil
        }
    }

    /// How many bytes a `short` call moves out of `count`: half, rounded down to 4096 where that
    /// leaves something, else half, else all of it.
    static func shortened(_ count: Int) -> Int {
        if count > 4096 { return max(4096, (count / 2) & ~4095) }
        return max(1, count / 2)
    }
}
