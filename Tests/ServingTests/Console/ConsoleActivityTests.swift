import Foundation
import Synchronization
import Testing

@testable import Serving

/// The console's request windows: counts, error rate, percentiles, buckets aligned to their
/// length, samples capped per second, history wrapping after an hour.
@Suite struct ConsoleActivityTests {
    final class FakeClock: Sendable {
        let second = Mutex(1_000_000)
        func advance(_ seconds: Int) { second.withLock { $0 += seconds } }
    }

    @Test func windowsCountRequestsErrorsAndLatencies() {
        let clock = FakeClock()
        let activity = ConsoleActivity(now: { clock.second.withLock { $0 } })
        for index in 1...100 {
            activity.request(status: 200, firstToken: Double(index) / 1000, interToken: 0.01)
        }
        activity.request(status: 500)
        activity.request(status: 429)
        activity.request(status: 499)  // the client left: not the server's error
        clock.advance(2)
        let minute = activity.window(60)
        #expect(minute.requests == 103)
        #expect(minute.errors == 2)
        #expect(abs(minute.errorRate - 2.0 / 103) < 1e-9)
        // 64 latency samples at most per second: the first 64 requests' (1...64 ms).
        #expect(minute.firstToken.samples == ConsoleActivity.samplesPerSecond)
        #expect(minute.firstToken.p50 == 0.032)
        #expect(minute.firstToken.p99 == 0.064)
        #expect(minute.interToken.p90 == 0.01)
        #expect(minute.series.count == 30 && minute.series.map(\.requests).reduce(0, +) == 103)
        #expect(minute.series.last?.requests == 103 && minute.series.last?.errors == 2)

        // Within a bucket the window does not move; an hour later everything has left it.
        // (The clock stands on a 2 s boundary: the minute's buckets are 2 s long.)
        let again = activity.window(60)
        clock.advance(1)
        #expect(activity.window(60) == again)
        clock.advance(1)
        #expect(activity.window(60) != again)
        clock.advance(3600 + 120)
        #expect(activity.window(3600).requests == 0)
        #expect(activity.window(60).firstToken.p50 == nil)
    }

    @Test func theRingForgetsSecondsOlderThanItsHistory() {
        let clock = FakeClock()
        let activity = ConsoleActivity(now: { clock.second.withLock { $0 } })
        activity.request(status: 200, firstToken: 0.5)
        clock.advance(ConsoleActivity.history)
        // The same slot, an hour later: the old second is not counted as this one.
        activity.request(status: 200, firstToken: 0.1)
        clock.advance(120)
        let hour = activity.window(3600)
        #expect(hour.requests == 1)
        #expect(hour.firstToken.p50 == 0.1)
    }

    @Test func coldStartsAndMigrationsKeepTheLatest() {
        let activity = ConsoleActivity()
        for index in 0..<(ConsoleActivity.keptColdStarts + 5) {
            activity.coldStart(
                .init(
                    at: Date(), deployment: "d", instance: "i\(index)", node: "n", tier: "ssd", queueSeconds: 0,
                    loadSeconds: 0.1, initSeconds: 0, prefillSeconds: 0.1, firstTokenSeconds: 0.2, promptTokens: 5,
                    weightBytes: 1, fetchedBytes: nil))
        }
        let kept = activity.recentColdStarts
        #expect(kept.count == ConsoleActivity.keptColdStarts)
        #expect(kept.first?.instance == "i5" && kept.last?.instance == "i\(ConsoleActivity.keptColdStarts + 4)")
    }
}
