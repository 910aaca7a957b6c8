"""The observability kit in deploy/ (Prometheus config and alert rules,
Grafana dashboards and provisioning) against promtool and against a real
Prometheus scraping a real diablo-scheduler.

ConfigTest (no model, seconds): `promtool check config` / `check rules`;
`promtool test rules` with synthetic series proves each alert fires on its
condition and stays quiet otherwise; the dashboards' JSON model, datasource
uids, variables and provisioning files are consistent; every metric an
expression names is one the scheduler defines (server/*.cc).

LiveTest (the real SmolLM2 model, about two minutes): a scheduler and one
worker on loopback, a real `prometheus` scraping the scheduler every second
with deploy/prometheus/alerts.yml loaded, a short job that finishes and a
40-step DiaBlo job with an eval file that is running; then every PromQL
expression of both dashboards must return data, every metric and label an
alert rule names must exist in Prometheus, and every rule must evaluate
without error.

Run: python test_observability.py --bin BUILD/bin --model SmolLM2.gguf
     [--promtool PATH] [--prometheus PATH] [unittest args, e.g. ConfigTest]
"""

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = {name: DEPLOY / "grafana" / "dashboards" / f"{name}.json" for name in ("fleet", "job")}
PROVISIONING = DEPLOY / "grafana" / "provisioning"

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from cluster import Cluster, write_job  # noqa: E402

BIN = None
MODEL = None
PROMTOOL = None
PROMETHEUS = None

# Grafana's built-in interval variables, as the live test substitutes them
# (Prometheus scrapes every second there).
GRAFANA_BUILTINS = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}

# ---- PromQL helpers (enough of the grammar for names and selectors)

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')


def metric_names(expr):
    """The metric names a PromQL expression selects (function and
    aggregation names, keywords, label names and durations excluded)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        if m.group(2) or m.group(1).lower() in _KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def selectors(expr):
    """(metric name, [(label, op, value)]) for each selector with matchers."""
    out = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = [(label, op, json.loads(value)) for label, op, value in _MATCHER.findall(m.group(2))]
        out.append((m.group(1), matchers))
    return out


def defined_metrics():
    """Metric families the scheduler's C++ registers (BuildX().Name("...")),
    with the series names a histogram adds."""
    names = set()
    for path in (REPO / "server").glob("*.cc"):
        text = path.read_text()
        for kind, name in re.findall(r"Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\(\"([a-z_:]+)\"\)", text):
            names.add(name)
            if kind in ("Histogram", "Summary"):
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def grafana_vars(expr):
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr)) | set(re.findall(r"\[\[([A-Za-z_]\w*)\]\]", expr))


def substitute(expr, values):
    for name, value in values.items():
        expr = expr.replace("${%s}" % name, value).replace("[[%s]]" % name, value)
        expr = re.sub(r"\$%s\b" % re.escape(name), value, expr)
    return expr


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def dashboard_exprs(dashboard):
    return [(p["title"], t.get("refId", ""), t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])
            if t.get("expr")]


def alert_rules():
    rules = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        rules += [r for r in group["rules"] if "alert" in r]
    return rules


def find_tool(given, name):
    if given:
        return given if Path(given).exists() else None
    return shutil.which(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- static checks


class ConfigTest(unittest.TestCase):
    def promtool(self, *args, cwd=None):
        if not PROMTOOL:
            self.skipTest("observability: promtool not found (apt-get install prometheus, or pass --promtool)")
        return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)

    def test_promtool_checks_config_and_rules(self):
        out = self.promtool("check", "config", PROM_CONFIG)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("1 rule files found", out.stdout + out.stderr, "prometheus.yml loads alerts.yml")
        out = self.promtool("check", "rules", ALERTS)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_alerts_fire_on_their_condition_and_only_then(self):
        """promtool test rules on synthetic series (annotations stripped: their
        text is checked below and by check rules; here the expressions, `for`
        and labels are under test)."""
        if not PROMTOOL:
            self.skipTest("observability: promtool not found (apt-get install prometheus, or pass --promtool)")
        doc = yaml.safe_load(ALERTS.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        S = 'instance="s:9464",job="diablo-scheduler"'
        L = {"instance": "s:9464", "job": "diablo-scheduler"}

        def fires(severity, extra=None):
            return {"exp_labels": dict(L, severity=severity, **(extra or {}))}

        def case(series, checks):
            return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
                    "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": e} for t, a, e in checks]}

        tests = [
            case([(f"up{{{S}}}", "1x5 0x20")], [
                ("4m", "DiabloSchedulerDown", []),
                ("10m", "DiabloSchedulerDown", [fires("critical")])]),
            # No worker while a job waits: critical after 5 min; the plain
            # "no worker" warning only after 30 min.
            case([(f"diablo_workers_alive{{{S}}}", "0x40"),
                  (f'diablo_jobs{{{S},state="queued"}}', "2x40")], [
                ("3m", "DiabloNoWorkerAliveWithQueuedJobs", []),
                ("7m", "DiabloNoWorkerAliveWithQueuedJobs", [fires("critical")]),
                ("7m", "DiabloNoWorkerAlive", []),
                ("35m", "DiabloNoWorkerAlive", [fires("warning")])]),
            case([(f"diablo_workers_alive{{{S}}}", "0x20"), (f'diablo_jobs{{{S},state="queued"}}', "0x20")], [
                ("10m", "DiabloNoWorkerAliveWithQueuedJobs", [])]),
            case([(f"diablo_workers_alive{{{S}}}", "2x20"), (f'diablo_jobs{{{S},state="queued"}}', "5x20")], [
                ("10m", "DiabloNoWorkerAliveWithQueuedJobs", [])]),
            case([(f"diablo_queue_oldest_wait_seconds{{{S}}}", "0+60x60")], [
                ("30m", "DiabloQueueWaitTooLong", []),
                ("40m", "DiabloQueueWaitTooLong", [fires("warning")])]),
            # Half of the finished jobs fail (one failure and one success a
            # minute): fires; all succeed, or only two failures: quiet.
            case([(f'diablo_jobs_finished_total{{{S},state="failed"}}', "0+1x90"),
                  (f'diablo_jobs_finished_total{{{S},state="succeeded"}}', "0+1x90"),
                  (f'diablo_jobs_finished_total{{{S},state="cancelled"}}', "0+5x90")], [
                ("60m", "DiabloJobFailureRateHigh", [fires("warning")])]),
            case([(f'diablo_jobs_finished_total{{{S},state="failed"}}', "0x90"),
                  (f'diablo_jobs_finished_total{{{S},state="succeeded"}}', "0+1x90")], [
                ("60m", "DiabloJobFailureRateHigh", [])]),
            case([(f'diablo_jobs_finished_total{{{S},state="failed"}}', "0x10 1x10 2x70"),
                  (f'diablo_jobs_finished_total{{{S},state="succeeded"}}', "0x90")], [
                ("60m", "DiabloJobFailureRateHigh", [])]),
            case([(f'diablo_trainer_errors_total{{{S},code="non_finite"}}', "0x10 1x30"),
                  (f'diablo_trainer_errors_total{{{S},code="out_of_memory"}}', "0x40")], [
                ("5m", "DiabloTrainingLossNotFinite", []),
                ("12m", "DiabloTrainingLossNotFinite", [fires("warning", {"code": "non_finite"})]),
                ("12m", "DiabloTrainerOutOfMemory", []),
                ("45m", "DiabloTrainingLossNotFinite", [])]),
            case([(f'diablo_trainer_errors_total{{{S},code="out_of_memory"}}', "0x10 3x30")], [
                ("12m", "DiabloTrainerOutOfMemory", [fires("warning", {"code": "out_of_memory"})])]),
            case([(f'diablo_api_requests_total{{{S},method="CreateJob",code="INTERNAL"}}', "0+60x30"),
                  (f'diablo_api_requests_total{{{S},method="GetJob",code="NOT_FOUND"}}', "0+600x30")], [
                ("5m", "DiabloApiErrors", []),
                ("20m", "DiabloApiErrors", [fires("warning")])]),
            case([(f'diablo_api_requests_total{{{S},method="GetJob",code="NOT_FOUND"}}', "0+600x30")], [
                ("20m", "DiabloApiErrors", [])]),
            # 5% free: the warning after 10 min, not the critical one; 1%: both.
            case([(f"diablo_data_dir_free_bytes{{{S}}}", "5e9x30"), (f"diablo_data_dir_capacity_bytes{{{S}}}", "1e11x30")], [
                ("5m", "DiabloDataDirNearlyFull", []),
                ("15m", "DiabloDataDirNearlyFull", [fires("warning")]),
                ("15m", "DiabloDataDirFull", [])]),
            case([(f"diablo_data_dir_free_bytes{{{S}}}", "1e9x30"), (f"diablo_data_dir_capacity_bytes{{{S}}}", "1e11x30")], [
                ("15m", "DiabloDataDirFull", [fires("critical")])]),
            case([(f"diablo_data_dir_free_bytes{{{S}}}", "5e10x30"), (f"diablo_data_dir_capacity_bytes{{{S}}}", "1e11x30")], [
                ("15m", "DiabloDataDirNearlyFull", []), ("15m", "DiabloDataDirFull", [])]),
        ]
        tested = {check["alertname"] for t in tests for check in t["alert_rule_test"]}
        self.assertEqual(tested, {r["alert"] for r in alert_rules()}, "every alert has a rule unit test")
        with tempfile.TemporaryDirectory(prefix="diablo-alerts-") as tmp:
            (Path(tmp) / "alerts.yml").write_text(yaml.safe_dump(doc))
            (Path(tmp) / "alerts_test.yml").write_text(yaml.safe_dump(
                {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}))
            out = self.promtool("test", "rules", "alerts_test.yml", cwd=tmp)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_every_alert_tells_the_operator_what_to_do(self):
        rules = alert_rules()
        self.assertGreaterEqual(len(rules), 6)
        names = {r["alert"] for r in rules}
        for needed in ("DiabloNoWorkerAliveWithQueuedJobs", "DiabloQueueWaitTooLong", "DiabloJobFailureRateHigh",
                       "DiabloTrainingLossNotFinite", "DiabloDataDirNearlyFull"):
            self.assertIn(needed, names)
        for rule in rules:
            self.assertIn(rule.get("labels", {}).get("severity"), ("critical", "warning"), rule["alert"])
            ann = rule.get("annotations", {})
            self.assertGreater(len(ann.get("summary", "")), 10, rule["alert"])
            self.assertGreater(len(ann.get("description", "")), 80, f"{rule['alert']}: say what to do")
        doc = (REPO / "docs" / "observability.md").read_text()
        for name in names:
            self.assertIn(name, doc, "docs/observability.md explains every alert")

    def test_prometheus_config_scrapes_the_scheduler_and_loads_the_rules(self):
        config = yaml.safe_load(PROM_CONFIG.read_text())
        self.assertEqual(config["rule_files"], ["alerts.yml"])
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        self.assertIn("diablo-scheduler", jobs, "DiabloSchedulerDown selects up{job=\"diablo-scheduler\"}")
        self.assertTrue(jobs["diablo-scheduler"]["static_configs"][0]["targets"])

    def test_dashboards_are_grafana_models_on_the_provisioned_datasource(self):
        sources = yaml.safe_load((PROVISIONING / "datasources.yaml").read_text())["datasources"]
        prom = [s for s in sources if s["type"] == "prometheus"]
        self.assertEqual(len(prom), 1)
        uid = prom[0]["uid"]
        providers = yaml.safe_load((PROVISIONING / "dashboards.yaml").read_text())["providers"]
        self.assertEqual(providers[0]["type"], "file")
        self.assertTrue(providers[0]["options"]["path"])
        uids = set()
        for name, path in DASHBOARDS.items():
            with self.subTest(dashboard=name):
                d = json.loads(path.read_text())
                self.assertGreaterEqual(d["schemaVersion"], 36)
                self.assertNotIn(d["uid"], uids)
                uids.add(d["uid"])
                ids, cells = set(), set()
                for p in panels(d):
                    self.assertIn(p["type"], ("timeseries", "stat"), p["title"])
                    self.assertNotIn(p["id"], ids)
                    ids.add(p["id"])
                    self.assertEqual(p["datasource"], {"type": "prometheus", "uid": uid}, p["title"])
                    self.assertTrue(p["targets"], p["title"])
                    for t in p["targets"]:
                        self.assertEqual(t["datasource"]["uid"], uid, p["title"])
                        self.assertTrue(t["expr"].strip(), p["title"])
                    g = p["gridPos"]
                    self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
                    for x in range(g["x"], g["x"] + g["w"]):
                        for y in range(g["y"], g["y"] + g["h"]):
                            self.assertNotIn((x, y), cells, f"{p['title']} overlaps another panel")
                            cells.add((x, y))
                variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
                for v in variables.values():
                    self.assertEqual(v["datasource"]["uid"], uid)
                for title, ref, expr in dashboard_exprs(d):
                    unknown = grafana_vars(expr) - set(variables) - set(GRAFANA_BUILTINS)
                    self.assertFalse(unknown, f"{name}/{title}/{ref}: unresolved variables {unknown} in {expr}")
        job = json.loads(DASHBOARDS["job"].read_text())
        var = {v["name"]: v for v in job["templating"]["list"]}["job_id"]
        self.assertEqual(var["definition"], "label_values(diablo_job_step, job_id)")
        self.assertEqual(var["query"]["query"], "label_values(diablo_job_step, job_id)")
        for title, ref, expr in dashboard_exprs(job):
            self.assertIn("$job_id", expr, f"job/{title}: every panel is about the chosen job")
        fleet = json.loads(DASHBOARDS["fleet"].read_text())
        self.assertEqual(fleet["templating"]["list"], [], "the fleet dashboard has no variables to resolve")
        titles = " ".join(p["title"] for p in panels(fleet)).lower()
        for word in ("queued", "oldest", "jobs by state", "workers alive", "finished", "api", "latency", "tokens/s"):
            self.assertIn(word, titles)

    def test_every_expression_names_metrics_the_scheduler_defines(self):
        defined = defined_metrics() | {"up"}
        self.assertIn("diablo_job_step", defined, "metrics found in server/*.cc")
        exprs = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
        for name, path in DASHBOARDS.items():
            exprs += [(f"{name}/{t}/{r}", e) for t, r, e in dashboard_exprs(json.loads(path.read_text()))]
        for where, expr in exprs:
            names = metric_names(expr)
            self.assertTrue(names, f"{where}: no metric found in {expr}")
            self.assertFalse(names - defined, f"{where}: {names - defined} not exported by the scheduler")

    def test_the_promql_helpers(self):
        self.assertEqual(metric_names(
            'histogram_quantile(0.99, sum by (le, method) (rate(diablo_api_request_seconds_bucket'
            '{method!~"LeaseJob|WatchJob"}[30s])))'), {"diablo_api_request_seconds_bucket"})
        self.assertEqual(metric_names('a_total / on (instance) group_left b{x="y"} > 1e9 and ignoring(z) c offset 5m'),
                         {"a_total", "b", "c"})
        self.assertEqual(metric_names("sum(x) by (state) or vector(0)"), {"x"})
        self.assertEqual(selectors('up{job="diablo-scheduler"} == 0 and m{a=~"x|y", b!="z"}'),
                         [("up", [("job", "=", "diablo-scheduler")]), ("m", [("a", "=~", "x|y"), ("b", "!=", "z")])])
        self.assertEqual(substitute('rate(x{job_id="$job_id"}[$__rate_interval]) ${job_id}',
                                    {"job_id": "j-1", "__rate_interval": "30s"}),
                         'rate(x{job_id="j-1"}[30s]) j-1')


# ---- live: a real Prometheus scraping a real scheduler


class LiveTest(unittest.TestCase):
    def setUp(self):
        if not MODEL or not Path(MODEL).exists():
            self.skipTest("observability: the SmolLM2 model is not available (scripts/setup.sh fetches it)")
        if not PROMETHEUS or not PROMTOOL:
            self.skipTest("observability: prometheus/promtool not found (apt-get install prometheus, or pass "
                          "--prometheus/--promtool)")
        if not BIN or not (Path(BIN) / "diablo-scheduler").exists():
            self.skipTest(f"observability: no diablo-scheduler in {BIN}")
        self.cluster = Cluster(BIN)
        self.addCleanup(self.cluster.stop)
        self.work = self.cluster.work
        self.prom_dir = self.work / "prometheus"
        self.prom_dir.mkdir()
        self.prom = None
        self.prom_log = None

    def tearDown(self):
        if self.prom is not None and self.prom.poll() is None:
            self.prom.terminate()
            try:
                self.prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        if self.prom_log is not None:
            self.prom_log.close()

    # ---- Prometheus

    def start_prometheus(self, metrics_port):
        """Our prometheus.yml with the scheduler on loopback as its target, a
        1 s scrape and evaluation interval, and our alerts.yml."""
        config = yaml.safe_load(PROM_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(ALERTS)]
        config.pop("alerting", None)
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "diablo-scheduler")
        job.update(scrape_interval="1s", scrape_timeout="1s")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
        path = self.prom_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        check = subprocess.run([PROMTOOL, "check", "config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.prom_port = free_port()
        self.prom_log = open(self.prom_dir / "prometheus.log", "w")
        self.prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={self.prom_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"],
            stdout=self.prom_log, stderr=subprocess.STDOUT)

        def ready():
            if self.prom.poll() is not None:
                raise AssertionError("prometheus exited:\n" + (self.prom_dir / "prometheus.log").read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        self.cluster.wait_for(ready, timeout=60, what="prometheus to be ready")

    def api(self, path, **params):
        """GET /api/v1/<path>; returns the decoded JSON (errors included)."""
        query = urllib.parse.urlencode([(k.replace("match", "match[]"), v) for k, vs in params.items()
                                        for v in (vs if isinstance(vs, list) else [vs])])
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b'{"status": "error", "error": "HTTP %d"}' % e.code)

    def query(self, expr):
        return self.api("query", query=expr)

    def series(self, selector):
        reply = self.api("series", match=selector, start=str(self.started - 60), end=str(time.time() + 60))
        self.assertEqual(reply["status"], "success", f"{selector}: {reply}")
        return reply["data"]

    # ---- the test

    def test_dashboards_and_alerts_against_live_metrics(self):
        c = self.cluster
        self.started = time.time()
        c.start_scheduler()
        self.assertIsNotNone(c.metrics_port, "the scheduler printed its metrics port")
        self.start_prometheus(c.metrics_port)
        subprocess.run([sys.executable, REPO / "scripts" / "make_demo_data.py", self.work, "64"], check=True,
                       capture_output=True)
        c.start_worker("w1")

        # A short job that finishes (queue-wait and duration histograms,
        # finished counters), then the one the job dashboard looks at: it
        # queues behind the first (one worker), then runs 40 steps with an
        # eval file, so every per-job series exists while we query.
        short = c.submit(write_job(self.work / "short.yaml", MODEL, self.work / "train.jsonl", 2))
        job_yaml = write_job(self.work / "observed.yaml", MODEL, self.work / "train.jsonl", 40, save_every=10,
                             extra="eval_every: 5\n")
        text = job_yaml.read_text()
        self.assertIn("max_seq_len: 64}", text)
        job_yaml.write_text(text.replace("max_seq_len: 64}", f"eval: {self.work / 'eval.jsonl'}, max_seq_len: 64}}"))
        job_id = c.submit(job_yaml)
        c.wait_state(short, "JOB_STATE_SUCCEEDED", timeout=180)
        c.wait_for(lambda: self.query(f'diablo_job_step{{job_id="{job_id}"}}')["data"]["result"], timeout=120,
                   what=f"Prometheus to scrape diablo_job_step of {job_id}", interval=1)

        values = dict(GRAFANA_BUILTINS, job_id=job_id)
        exprs = []
        for name, path in DASHBOARDS.items():
            for title, ref, expr in dashboard_exprs(json.loads(path.read_text())):
                resolved = substitute(expr, values)
                self.assertNotIn("$", resolved, f"{name}/{title}: unresolved variable in {resolved}")
                self.assertNotIn("[[", resolved, f"{name}/{title}: unresolved variable in {resolved}")
                exprs.append((f"{name}/{title}/{ref}", resolved))

        # Every dashboard expression returns data (eval loss and the rates
        # need a few scrapes: poll until all do, or the job stops running).
        results = {}
        deadline = time.time() + 120
        while True:
            for where, expr in exprs:
                results[where] = (expr, self.query(expr))
            missing = [w for w, (e, r) in results.items()
                       if r.get("status") != "success" or not r["data"]["result"]]
            running = c.job(job_id).get("state") == "JOB_STATE_RUNNING"
            if not missing or time.time() > deadline or not running:
                break
            time.sleep(2)
        self.print_table("dashboard expressions", results)
        errors = {w: r for w, (e, r) in results.items() if r.get("status") != "success"}
        self.assertFalse(errors, f"queries Prometheus refused: {errors}")
        self.assertFalse(missing, f"dashboard expressions without data (job running: {running}): "
                                  f"{[(w, results[w][0]) for w in missing]}\n" + c.logs_tail())
        self.assertEqual(self.scalar("sum(diablo_workers_alive)"), 1)
        self.assertGreaterEqual(self.scalar('sum(diablo_jobs_finished_total{state="succeeded"})'), 1)
        self.assertGreaterEqual(self.scalar(f'max(diablo_job_step{{job_id="{job_id}"}})'), 1)
        self.assertGreater(self.scalar(f'max(diablo_job_eval_loss{{job_id="{job_id}"}})'), 0)
        self.assertGreater(self.scalar(f'max(diablo_job_learning_rate{{job_id="{job_id}"}})'), 0)
        self.assertGreater(self.scalar(f'max(diablo_job_peak_rss_bytes{{job_id="{job_id}"}})'), 1 << 20)
        self.assertGreater(self.scalar("max(diablo_data_dir_capacity_bytes)"), 0)

        # The job dashboard's variable: label_values(diablo_job_step, job_id).
        reply = self.api("label/job_id/values", match="diablo_job_step", start=str(self.started),
                         end=str(time.time()))
        self.assertEqual(reply["status"], "success", reply)
        self.assertIn(job_id, reply["data"], "the job_id variable offers the running job")

        # Alerts: each expression parses and runs; each metric it names
        # exists, and so does each label it matches on; an equality matcher
        # selects an existing series.  Every rule evaluates without error.
        alert_results = {}
        for rule in alert_rules():
            expr = rule["expr"].strip()
            reply = self.query(expr)
            alert_results[f"alert {rule['alert']}"] = (" ".join(expr.split()), reply)
            self.assertEqual(reply.get("status"), "success", f"{rule['alert']}: {reply}")
            names = metric_names(expr)
            self.assertTrue(names, f"{rule['alert']}: no metric in {expr}")
            for name in names:
                self.assertTrue(self.series(name), f"{rule['alert']} names {name}, which Prometheus never saw")
            for name, matchers in selectors(expr):
                known = set().union(*(s.keys() for s in self.series(name)))
                for label, op, value in matchers:
                    self.assertIn(label, known, f"{rule['alert']}: {name} has no label {label!r}")
                    if op == "=":
                        self.assertTrue(self.series(f'{name}{{{label}="{value}"}}'),
                                        f'{rule["alert"]}: no series {name}{{{label}="{value}"}}')
        self.print_table("alert expressions (empty = not firing)", alert_results)

        def rules_evaluated():
            groups = self.api("rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                          not r["lastEvaluation"].startswith("0001") for r in rules) else None
        rules = c.wait_for(rules_evaluated, timeout=30, what="prometheus to evaluate the rules", interval=1)
        self.assertEqual({r["name"] for r in rules}, {r["alert"] for r in alert_rules()})
        bad = {r["name"]: r.get("lastError") for r in rules if r.get("health") != "ok"}
        self.assertFalse(bad, f"rules that failed to evaluate: {bad}")
        firing = [a["labels"]["alertname"] for a in self.api("alerts")["data"]["alerts"]]
        print(f"alerts pending/firing on the healthy test service: {firing or 'none'}")
        self.assertNotIn("DiabloSchedulerDown", firing)
        self.assertNotIn("DiabloNoWorkerAliveWithQueuedJobs", firing)

        c.ctl("cancel", job_id, "--reason", "test done")

    def scalar(self, expr):
        reply = self.query(expr)
        self.assertEqual(reply["status"], "success", reply)
        result = reply["data"]["result"]
        self.assertEqual(len(result), 1, f"{expr}: {result}")
        return float(result[0]["value"][1])

    @staticmethod
    def print_table(title, results):
        width = min(110, max(len(e) for e, _ in results.values()))
        print(f"\n{title}:\n  {'expression':<{width}}  series  first value")
        for where, (expr, reply) in results.items():
            result = reply.get("data", {}).get("result", []) if reply.get("status") == "success" else None
            count = "ERROR" if result is None else str(len(result))
            first = result[0]["value"][1] if result else ""
            shown = expr if len(expr) <= width else expr[:width - 3] + "..."
            print(f"  {shown:<{width}}  {count:>6}  {first}")
        sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=str(REPO / "build" / "bin"))
    parser.add_argument("--model", default="")
    parser.add_argument("--promtool", default="")
    parser.add_argument("--prometheus", default="")
    args, rest = parser.parse_known_args()
    BIN, MODEL = args.bin, args.model
    PROMTOOL = find_tool(args.promtool, "promtool")
    PROMETHEUS = find_tool(args.prometheus, "prometheus")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
