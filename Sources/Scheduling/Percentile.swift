/// The nearest-rank percentile of `values` (`fraction` 0...1); NaN when there are none.
public func percentile(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    return percentile(sorted: sorted, fraction)
}

/// `percentile` of values already sorted.
public func percentile(sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let rank = Int((Double(sorted.count) * fraction).rounded(.up)) - 1
    return sorted[min(sorted.count - 1, max(0, rank))]
}
