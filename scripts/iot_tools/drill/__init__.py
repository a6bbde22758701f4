"""The probe drill: the chart's rendered probes, executed with kubelet semantics against the
platform's real processes, through a scripted fault scenario.

Modules, one concern each:
  timescale    one factor applied to every probe timing, back-off and scenario duration
  spec         probe and container specs as read from Kubernetes manifests
  render       the Python services' pods from `helm template` (env, ports, probes, grace)
  platform     local stand-ins for the cluster: NATS, PostgreSQL, migration, env mapping
  probes       executing one probe (httpGet, tcpSocket, exec) against a local process
  backoff      the kubelet's crash-loop back-off
  kubelet      one container: process lifecycle, probe workers, thresholds, restarts
  timeline     what happened when, relative to the drill's start
  telemetry    device readings published versus stored, per phase
  faults       the faults the scenario injects
  expectations what must hold during a fault, evaluated on the recorded history
  scenario     the scripted phases: warm-up, faults, recovery, final accounting
  display      the live table (in place on a TTY, periodic lines otherwise)
  report       the closing timeline and summary, and the JSON report
  drill        wiring: everything above, started and stopped in order
  cli          `python -m iot_tools.drill --help`
"""
