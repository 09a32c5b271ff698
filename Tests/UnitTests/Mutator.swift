import Chunks
import Wire

/// SplitMix64: a small, fast generator whose whole state is one UInt64, so a fuzz case is a pure
/// function of (seed, iteration) and any failure can be rebuilt from the two numbers it prints.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(state: UInt64) { self.state = state }

    /// The generator of one fuzz case. Each iteration gets its own stream, so replaying iteration
    /// `i` never needs iterations 0..<i.
    init(seed: UInt64, iteration: UInt64) {
        state = Self.mix(seed ^ Self.mix(iteration &+ 0x9E37_79B9_7F4A_7C15))
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0..<n, for n > 0.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// True one time in `n`.
    mutating func oneIn(_ n: Int) -> Bool { below(n) == 0 }
    mutating func pick<T>(_ xs: [T]) -> T { xs[below(xs.count)] }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

/// Mutations of frame streams: blind byte edits, and edits that know where a frame's length,
/// type and a chunk header's fields sit, so most mutants reach the checks past the frame head.
struct Mutator {
    /// Inputs grow no larger than this (room for the 1 MiB that makes the parser compact its
    /// buffer); the parser's caps are tested by the lengths it is told, not by bytes it is given.
    static let maxInput = 2 << 20

    static let interestingBytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x10, 0x20]

    /// Lengths to write into a 4-byte frame length field: the edges of every type's cap, of the
    /// chunk header, and of the integer types on both sides of the conversion.
    static let interestingLengths: [UInt32] = {
        var v: [UInt32] = [0, 1, 2, 5, 8, 9, 10, UInt32(ChunkHeader.size), UInt32(ChunkHeader.size + 1), UInt32(ChunkHeader.size + 2),
                           0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000,
                           0x8000_0001, 0xffff_fffe, 0xffff_ffff]
        for type in FrameType.allFuzzed {
            let cap = FrameHead.maxBody(type)   // a frame's length counts the type byte too
            for l in [cap - 1, cap, cap + 1, cap + 2] where l >= 0 && l <= Int(UInt32.max) { v.append(UInt32(l)) }
        }
        return v
    }()

    /// Values for the 8-byte fields (chunk index and offset, u64 bodies): the edges of `chunkIndex`,
    /// of Int, and of the chunk size cap.
    static let interesting64: [UInt64] = [0, 1, 2, 0x7f, 0x80, 0xff, 4096, UInt64(ChunkGeometry.maxChunkSize),
                                          UInt64(ChunkGeometry.maxChunkSize) + 1, 1 << 31, (1 << 31) - 1, (1 << 32) - 1, 1 << 32,
                                          (1 << 40) - 1, 1 << 40, (1 << 40) + 1, 1 << 62, (1 << 63) - 1, 1 << 63, UInt64.max - 1, .max]

    /// JSON number texts at the edges of Int, Int64, UInt64 and Double.
    static let interestingNumbers = ["0", "-1", "1", "4096", "65536", "268435456", "268435457", "2147483648", "4294967295",
                                     "4294967296", "1099511627776", "1099511627777", "4611686018427387904",
                                     "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
                                     "18446744073709551615", "18446744073709551616", "1e308", "1e309", "-0", "0.5", "1E2",
                                     "00", "-", "1e", "NaN", "null", "true", "\"1\"", "[]", "{}"]

    static let interestingStrings = ["\"\"", "\"-\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\uDFFF\"", "\"\\\"", "\"a\\qb\"",
                                     "\"zz\"", "\"" + String(repeating: "ab", count: 32) + "\"", "\"" + String(repeating: "g", count: 64) + "\"",
                                     "\"resend-send\"", "\"verify\"", "\"receive\"", "\"send\"", "\"resend-receive\"", "\"sent\"",
                                     "\"refused\"", "\"repaired\""]

    let corpus: [[UInt8]]

    /// One mutant of a random corpus entry: one to eight stacked mutations.
    func mutant(_ rng: inout SplitMix64) -> [UInt8] {
        var b = rng.pick(corpus)
        for _ in 0..<(1 + rng.below(rng.oneIn(4) ? 8 : 3)) { mutate(&b, &rng) }
        // Rarely, a megabyte of valid log frames first, so the parser compacts its buffer mid-stream.
        if rng.oneIn(4096) {
            let log = FrameHead.encode(.log, bodyLength: 64 << 10 - 1) + [UInt8](repeating: 0x41, count: 64 << 10 - 1)
            b = Array([[UInt8]](repeating: log, count: 17).joined()) + b
        }
        if b.count > Self.maxInput { b.removeLast(b.count - Self.maxInput) }
        return b
    }

    func mutate(_ b: inout [UInt8], _ rng: inout SplitMix64) {
        switch rng.below(16) {
        case 0, 1, 2, 3, 4: structural(&b, &rng)
        case 5: json(&b, &rng)
        case 6: if !b.isEmpty { b[rng.below(b.count)] ^= 1 << UInt8(rng.below(8)) }
        case 7: if !b.isEmpty { b[rng.below(b.count)] = rng.pick(Self.interestingBytes) }
        case 8: if !b.isEmpty { b[rng.below(b.count)] = rng.byte() }
        case 9:
            let bytes = (0..<(1 + rng.below(8))).map { _ in rng.oneIn(2) ? rng.pick(Self.interestingBytes) : rng.byte() }
            b.insert(contentsOf: bytes, at: rng.below(b.count + 1))
        case 10:
            guard !b.isEmpty else { return }
            let at = rng.below(b.count)
            b.removeSubrange(at..<min(b.count, at + 1 + rng.below(rng.oneIn(2) ? 4 : 64)))
        case 11:
            // Duplicate a run of bytes somewhere else (a frame or a header sent twice).
            guard !b.isEmpty else { return }
            let from = rng.below(b.count)
            let run = Array(b[from..<min(b.count, from + 1 + rng.below(128))])
            b.insert(contentsOf: run, at: rng.below(b.count + 1))
        case 12:
            // Splice: the head of this input, the tail of another.
            let other = rng.pick(corpus)
            b = Array(b[..<rng.below(b.count + 1)]) + Array(other[rng.below(other.count + 1)...])
        case 13:
            // A 4- or 8-byte big-endian field anywhere, set to an edge value.
            if rng.oneIn(2) { put(UInt64(rng.pick(Self.interestingLengths)), width: 4, in: &b, at: rng.below(b.count + 1)) }
            else { put(rng.pick(Self.interesting64), width: 8, in: &b, at: rng.below(b.count + 1)) }
        case 14:
            if !b.isEmpty { b.removeLast(1 + rng.below(min(b.count, 16))) }
        default:
            b += rng.pick(corpus)
        }
    }

    /// Where each frame starts, walking lengths from the first byte for as long as they lead
    /// somewhere inside the input.
    static func heads(_ b: [UInt8]) -> [Int] {
        var out: [Int] = []
        var at = 0
        while at + FrameHead.size <= b.count && out.count < 64 {
            out.append(at)
            let length = Int(b.u32(at: at))
            at += 4 + length
        }
        return out
    }

    /// Edits a frame head or a field of a chunk or sub-block header: the lengths and indexes a
    /// hostile peer controls.
    func structural(_ b: inout [UInt8], _ rng: inout SplitMix64) {
        let heads = Self.heads(b)
        guard !heads.isEmpty else { return put(UInt64(rng.pick(Self.interestingLengths)), width: 4, in: &b, at: 0) }
        let at = rng.pick(heads)
        let type = FrameType(rawValue: b[at + 4])
        let length = Int(b.u32(at: at))
        let body = at + FrameHead.size
        switch rng.below(6) {
        case 0, 1:
            // The frame's length: an edge of this type's cap, an edge in general, or off by a little.
            var choices = Self.interestingLengths.map(Int.init)
            if let type { let cap = FrameHead.maxBody(type); choices += [cap, cap + 1, cap + 2] }
            choices += [length - 1, length + 1, length - 8, length + 8, length * 2]
            let v = rng.pick(choices)
            put(UInt64(UInt32(truncatingIfNeeded: max(0, v))), width: 4, in: &b, at: at)
        case 2:
            // The type: another real type (its cap and decoder now apply to this body), or not one.
            b[at + 4] = rng.oneIn(4) ? rng.byte() : rng.pick(FrameType.allFuzzed).rawValue
        case 3, 4:
            if type == .chunk {
                // Chunk header: index at 0, flags at 8, raw length at 41, offset at 45.
                switch rng.below(4) {
                case 0: put(rng.pick(Self.interesting64), width: 8, in: &b, at: body)
                case 1: if body + 8 < b.count { b[body + 8] = UInt8(rng.below(16)) | (rng.oneIn(8) ? 0xf0 : 0) }
                case 2: put(UInt64(rng.pick(Self.interestingLengths)), width: 4, in: &b, at: body + 41)
                default: put(rng.pick(Self.interesting64), width: 8, in: &b, at: body + 45)
                }
            } else if type == .subBlocks {
                // Sub-blocks: chunk at 0, block size at 8, hash count at 12; the count must match the body.
                let count = max(0, length - 1 - 16) / 32
                switch rng.below(3) {
                case 0: put(rng.pick(Self.interesting64), width: 8, in: &b, at: body)
                case 1: put(UInt64(rng.pick(Self.interestingLengths)), width: 4, in: &b, at: body + 8)
                default:
                    let v = rng.pick(Self.interestingLengths.map(Int.init) + [count - 1, count + 1, 1 << 27, (1 << 27) + 1, 1 << 28])
                    put(UInt64(UInt32(truncatingIfNeeded: max(0, v))), width: 4, in: &b, at: body + 12)
                }
            } else {
                // An 8-byte body (retransmit, checkpoint, progress), or the first bytes of any other.
                put(rng.pick(Self.interesting64), width: 8, in: &b, at: body)
            }
        default:
            // Cut the stream inside this frame: in its head, or in its body.
            b.removeLast(b.count - min(b.count, at + rng.below(FrameHead.size + max(1, min(length, 64)))))
        }
    }

    /// Edits a JSON body in place of its text: a number, a string or a value swapped for an edge
    /// case, a member dropped, or nesting deep enough to test the decoder's recursion.
    func json(_ b: inout [UInt8], _ rng: inout SplitMix64) {
        let heads = Self.heads(b)
        let tokens = Self.jsonTokens(b)
        let numbers = tokens.filter { $0.number }, strings = tokens.filter { !$0.number }
        let before = b.count
        var at: Int
        switch rng.below(5) {
        case 0, 1:
            guard !numbers.isEmpty else { return structural(&b, &rng) }
            let t = rng.pick(numbers)
            at = t.range.lowerBound
            b.replaceSubrange(t.range, with: Array(rng.pick(Self.interestingNumbers).utf8))
        case 2:
            guard !strings.isEmpty else { return structural(&b, &rng) }
            let t = rng.pick(strings)
            at = t.range.lowerBound
            b.replaceSubrange(t.range, with: Array(rng.pick(Self.interestingStrings + Self.interestingNumbers).utf8))
        case 3:
            guard !tokens.isEmpty else { return }
            let t = rng.pick(tokens)
            at = t.range.lowerBound
            let end = b[t.range.upperBound...].firstIndex(of: UInt8(ascii: ",")) ?? t.range.upperBound
            b.removeSubrange(at..<end)
        default:
            let depth = rng.pick([2, 64, 511, 512, 513, 1000, 10_000])
            at = tokens.isEmpty ? rng.below(b.count + 1) : rng.pick(tokens).range.lowerBound
            let deep = rng.oneIn(2) ? [UInt8](repeating: UInt8(ascii: "["), count: depth)
                                    : Array([[UInt8]](repeating: Array("{\"a\":".utf8), count: depth).joined())
            b.insert(contentsOf: deep, at: at)
        }
        // Most of the time the edited frame's length follows its body, so the edit reaches the
        // decoder instead of the length check.
        guard !rng.oneIn(8), let head = heads.last(where: { $0 + FrameHead.size <= at }) else { return }
        let length = Int(b.u32(at: head)) + b.count - before
        if length >= 0 { put(UInt64(UInt32(truncatingIfNeeded: length)), width: 4, in: &b, at: head) }
    }

    struct Token { var range: Range<Int>; var number: Bool }

    /// Numbers and quoted strings in a JSON text, roughly: enough to aim edits at values.
    static func jsonTokens(_ b: [UInt8]) -> [Token] {
        var out: [Token] = []
        var i = 0
        while i < b.count && out.count < 256 {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                var j = i + 1
                while j < b.count && b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
                let end = min(j + 1, b.count)
                out.append(Token(range: i..<end, number: false))
                i = end
            } else if c == UInt8(ascii: "-") || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) {
                var j = i + 1
                while j < b.count, b[j] == UInt8(ascii: ".") || b[j] == UInt8(ascii: "e") || b[j] == UInt8(ascii: "E")
                    || b[j] == UInt8(ascii: "+") || b[j] == UInt8(ascii: "-") || (b[j] >= UInt8(ascii: "0") && b[j] <= UInt8(ascii: "9")) { j += 1 }
                out.append(Token(range: i..<j, number: true))
                i = j
            } else {
                i += 1
            }
        }
        return out
    }

    /// Writes `v` big-endian in `width` bytes at `at`, as far as the input reaches.
    func put(_ v: UInt64, width: Int, in b: inout [UInt8], at: Int) {
        for k in 0..<width where at + k < b.count {
            b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(width - 1 - k)))
        }
    }
}

extension FrameType {
    static let allFuzzed: [FrameType] = (0...255).compactMap { FrameType(rawValue: UInt8($0)) }
}

extension Array where Element == UInt8 {
    func u32(at i: Int) -> UInt32 {
        (i..<(i + 4)).reduce(0) { $0 << 8 | UInt32(self[$1]) }
    }
}
