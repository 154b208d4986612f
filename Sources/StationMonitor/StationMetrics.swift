import Prometheus

/// The station's Prometheus metrics (swift-prometheus), served as text on `GET /metrics`:
/// attempts by result and port, bytes sent by port, attempt durations as a histogram by result,
/// and the boards being flashed now.
package final class StationMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let inProgress: Gauge

    /// Buckets for a whole attempt: a small image takes seconds, a full eMMC many minutes.
    static let durationBuckets: [Double] = [5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 2400]

    package init() {
        inProgress = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "stm32mp_flash", metricName: "boards_in_progress", unitName: "",
                helpText: "Boards being flashed now."))
        inProgress.set(to: 0)
    }

    func started() { inProgress.increment() }

    func sent(bytes: Int64, port: String) {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "stm32mp_flash", metricName: "sent", unitName: "bytes",
                helpText: "Bytes of partitions and boot stages accepted by the boards."),
            labels: [("port", port)]
        ).increment(by: bytes)
    }

    func finished(result: String, port: String, seconds: Double) {
        inProgress.decrement()
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "stm32mp_flash", metricName: "runs", unitName: "total",
                helpText: "Flash attempts by result (done, failed, cancelled) and port."),
            labels: [("result", result), ("port", port)]
        ).increment()
        registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "stm32mp_flash", metricName: "run_duration", unitName: "seconds",
                helpText: "Duration of flash attempts, from taking the board to the end."),
            labels: [("result", result)], buckets: Self.durationBuckets
        ).record(seconds)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    package func exposition() -> String { registry.emitToString() }
}
