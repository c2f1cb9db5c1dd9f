import Foundation

/// A line chart drawn as SVG: one polyline per series, axes with ticks, a legend. Enough for
/// the simulator's CDFs and sweeps; no dependency.
public struct SVGPlot: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]

        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var logX: Bool
    public var logY: Bool
    public var series: [Series]
    /// Draws the points as steps (a CDF) rather than straight segments.
    public var steps: Bool

    public init(
        title: String, xLabel: String, yLabel: String, logX: Bool = false, logY: Bool = false, steps: Bool = false,
        series: [Series]
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.logX = logX
        self.logY = logY
        self.steps = steps
        self.series = series
    }

    static let colors = ["#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#444444", "#00798c"]

    /// The chart, `width` × `height` pixels.
    public func render(width: Double = 640, height: Double = 400) -> String {
        let left = 70.0
        let right = 20.0
        let top = 36.0
        let bottom = 56.0
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let finite = series.flatMap(\.points).filter {
            $0.x.isFinite && $0.y.isFinite && (!logX || $0.x > 0) && (!logY || $0.y > 0)
        }
        func range(_ values: [Double], log: Bool) -> (Double, Double) {
            guard var low = values.min(), var high = values.max() else { return (log ? 1 : 0, log ? 10 : 1) }
            if log {
                high = pow(10, ceil(log10(high)))
                // Five decades at most: smaller values are drawn at the axis.
                low = max(pow(10, floor(log10(low))), high / 1e5)
                if high <= low { high = low * 10 }
            } else {
                if !logY, values.allSatisfy({ $0 >= 0 }) { low = min(low, 0) }
                if high <= low { high = low + 1 }
            }
            return (low, high)
        }
        let (xLow, xHigh) = range(finite.map(\.x), log: logX)
        let (yLow, yHigh) = range(finite.map(\.y), log: logY)
        func px(_ x: Double) -> Double {
            let t = logX ? (log10(x) - log10(xLow)) / (log10(xHigh) - log10(xLow)) : (x - xLow) / (xHigh - xLow)
            return left + min(1, max(0, t)) * plotWidth
        }
        func py(_ y: Double) -> Double {
            let t = logY ? (log10(y) - log10(yLow)) / (log10(yHigh) - log10(yLow)) : (y - yLow) / (yHigh - yLow)
            return top + (1 - min(1, max(0, t))) * plotHeight
        }
        func ticks(_ low: Double, _ high: Double, log: Bool) -> [Double] {
            if log {
                var values: [Double] = []
                var value = low
                while value <= high * 1.0001 {
                    values.append(value)
                    value *= 10
                }
                return values
            }
            let raw = (high - low) / 5
            let magnitude = pow(10, floor(log10(raw)))
            let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
            var values: [Double] = []
            var value = ceil(low / step) * step
            while value <= high + step * 1e-9 {
                values.append(value)
                value += step
            }
            return values
        }
        func label(_ value: Double) -> String {
            if value == 0 { return "0" }
            if abs(value) >= 1000 || abs(value) < 0.01 { return String(format: "%g", value) }
            return String(format: "%g", (value * 1000).rounded() / 1000)
        }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(width / 2)" y="20" text-anchor="middle" font-size="14">\(escape(title))</text>

            """
        for tick in ticks(xLow, xHigh, log: logX) {
            let x = px(tick)
            svg +=
                "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + plotHeight))\" stroke=\"#e4e4e4\"/>\n"
            svg +=
                "<text x=\"\(f(x))\" y=\"\(f(top + plotHeight + 16))\" text-anchor=\"middle\">\(label(tick))</text>\n"
        }
        for tick in ticks(yLow, yHigh, log: logY) {
            let y = py(tick)
            svg +=
                "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(y))\" stroke=\"#e4e4e4\"/>\n"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(label(tick))</text>\n"
        }
        svg +=
            "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#888\"/>\n"
        svg +=
            "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(height - 14))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        svg +=
            "<text transform=\"translate(16 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        for (number, line) in series.enumerated() {
            let color = Self.colors[number % Self.colors.count]
            let points = line.points.filter {
                $0.x.isFinite && $0.y.isFinite && (!logX || $0.x > 0) && (!logY || $0.y > 0)
            }
            var coordinates: [String] = []
            var previous: (Double, Double)?
            for point in points {
                let (x, y) = (px(point.x), py(point.y))
                if steps, let (_, lastY) = previous { coordinates.append("\(f(x)),\(f(lastY))") }
                coordinates.append("\(f(x)),\(f(y))")
                previous = (x, y)
            }
            svg +=
                "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(coordinates.joined(separator: " "))\"/>\n"
            if !steps {
                for point in points {
                    svg += "<circle cx=\"\(f(px(point.x)))\" cy=\"\(f(py(point.y)))\" r=\"3\" fill=\"\(color)\"/>\n"
                }
            }
            let legendY = top + 14 + Double(number) * 16
            svg +=
                "<line x1=\"\(f(left + 10))\" y1=\"\(f(legendY - 4))\" x2=\"\(f(left + 30))\" y2=\"\(f(legendY - 4))\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            svg += "<text x=\"\(f(left + 36))\" y=\"\(f(legendY))\">\(escape(line.name))</text>\n"
        }
        return svg + "</svg>\n"
    }

    private func f(_ value: Double) -> String { String(format: "%.1f", value) }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

extension SimulationResult {
    /// Points of the empirical CDF of `values` (at most `points`, evenly spaced in rank).
    public static func cdf(_ values: [Double], points: Int = 200) -> [(x: Double, y: Double)] {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return [] }
        let step = max(1, sorted.count / max(1, points))
        var result: [(Double, Double)] = []
        var index = 0
        while index < sorted.count {
            result.append((sorted[index], Double(index + 1) / Double(sorted.count)))
            index += step
        }
        if result.last?.1 != 1 { result.append((sorted[sorted.count - 1], 1)) }
        return result
    }
}
