// Offline validation of the Kubernetes manifests in deploy/: every document is checked
// against the Kubernetes OpenAPI schema (kubernetes-models), then the specifics the
// agent and aggregator depend on are asserted. No cluster needed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import {
  ConfigMap,
  Namespace,
  PersistentVolumeClaim,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';

// Compiled to dist/test/deploy/manifests.test.js, so the repo root is three levels up.
// SHADOWLAYER_REPO_ROOT overrides it when the test is compiled somewhere else.
const repoRoot =
  process.env['SHADOWLAYER_REPO_ROOT'] ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const deployDir = path.join(repoRoot, 'deploy');

type Obj = Record<string, unknown>;

interface ModelClass {
  readonly apiVersion: string;
  readonly kind: string;
  new (data?: never): { validate(): void };
}

const MODELS: readonly ModelClass[] = [
  Namespace,
  ServiceAccount,
  ConfigMap,
  PersistentVolumeClaim,
  Service,
  DaemonSet,
  Deployment,
  ClusterRole,
  ClusterRoleBinding,
];
const modelByType = new Map<string, ModelClass>(MODELS.map((m) => [`${m.apiVersion}/${m.kind}`, m]));

function validate(obj: Obj): void {
  const key = `${String(obj['apiVersion'])}/${String(obj['kind'])}`;
  const Model = modelByType.get(key);
  if (Model === undefined) throw new Error(`no schema model for ${key}`);
  new Model(obj as never).validate();
}

interface Manifest {
  file: string;
  obj: Obj;
}

function parseFile(file: string, version: '1.1' | '1.2'): Obj[] {
  const text = readFileSync(path.join(deployDir, file), 'utf8');
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text, { version })) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // empty document (e.g. trailing ---)
    assert.ok(typeof value === 'object' && !Array.isArray(value), `${file}: document is not a mapping`);
    out.push(value as Obj);
  }
  return out;
}

const yamlFiles = readdirSync(deployDir)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .sort();

const manifests: Manifest[] = yamlFiles.flatMap((file) =>
  parseFile(file, '1.2').map((obj) => ({ file, obj })),
);

// --- small typed accessors over the untyped parsed YAML ---
function get(o: unknown, ...keys: (string | number)[]): unknown {
  let cur: unknown = o;
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}
function arr(o: unknown, ...keys: (string | number)[]): Obj[] {
  const v = get(o, ...keys);
  assert.ok(Array.isArray(v), `expected an array at ${keys.join('.')}`);
  return v as Obj[];
}
function find(kind: string, name: string): Obj {
  const m = manifests.find((x) => x.obj['kind'] === kind && get(x.obj, 'metadata', 'name') === name);
  assert.ok(m, `${kind}/${name} not found in deploy/`);
  return m.obj;
}
function byName(list: Obj[], name: string): Obj {
  const item = list.find((x) => x['name'] === name);
  assert.ok(item, `no entry named ${name}`);
  return item;
}
/** The container's volumeMount at mountPath together with the pod volume it refers to. */
function mountAt(podSpec: unknown, mountPath: string): { mount: Obj; volume: Obj } {
  const mount = arr(podSpec, 'containers', 0, 'volumeMounts').find((m) => m['mountPath'] === mountPath);
  assert.ok(mount, `nothing mounted at ${mountPath}`);
  const volume = byName(arr(podSpec, 'volumes'), String(mount['name']));
  return { mount, volume };
}

/** A container's command and args, as the kubelet runs them (args follow command). */
function argv(container: unknown): string[] {
  const out: string[] = [];
  for (const k of ['command', 'args']) {
    const v = get(container, k);
    if (v === undefined) continue;
    assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${k} must be a list of strings`);
    out.push(...(v as string[]));
  }
  return out;
}
/** Every value given to `flag`, as `--flag value` or `--flag=value`. */
function flagValues(args: readonly string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag && i + 1 < args.length) out.push(String(args[i + 1]));
    else if (a.startsWith(`${flag}=`)) out.push(a.slice(flag.length + 1));
  });
  return out;
}
function oneFlag(args: readonly string[], flag: string): string {
  const v = flagValues(args, flag);
  assert.equal(v.length, 1, `expected ${flag} once in ${args.join(' ')}`);
  return String(v[0]);
}
function containerNamed(podSpec: unknown, name: string, list: 'containers' | 'initContainers' = 'containers'): Obj {
  return byName(arr(podSpec, list), name);
}

/**
 * Where a file a container is told about comes from: the Secret (and key) mounted at its
 * directory, or a problem. A Secret volume listing `items` must list the file; one without items
 * mounts every key, so only the directory can be checked.
 */
function secretFileSource(podSpec: unknown, container: unknown, file: string): { secret: string; key: string } | string {
  const dir = path.posix.dirname(file);
  const mounts = (get(container, 'volumeMounts') ?? []) as Obj[];
  const mount = mounts.find((m) => m['mountPath'] === dir);
  if (mount === undefined) return `${file}: nothing is mounted at ${dir}`;
  const volume = ((get(podSpec, 'volumes') ?? []) as Obj[]).find((v) => v['name'] === mount['name']);
  const secret = get(volume, 'secret', 'secretName');
  if (typeof secret !== 'string') return `${file}: ${dir} is not a Secret volume`;
  const base = path.posix.basename(file);
  const items = get(volume, 'secret', 'items') as Obj[] | undefined;
  if (items === undefined) return { secret, key: base };
  const item = items.find((i) => i['path'] === base);
  if (item === undefined) return `${file}: Secret ${secret} is mounted at ${dir} without ${base}`;
  return { secret, key: String(item['key']) };
}
/** Asserts that `file` reaches the container as key `key` of Secret `secret`. */
function assertSecretFile(podSpec: unknown, container: unknown, file: string, secret: string, key: string): void {
  const src = secretFileSource(podSpec, container, file);
  assert.deepEqual(src, { secret, key }, file);
}

const BUILDER_LABEL = 'shadowlayer.io/builder';

/**
 * Why a pod spec could run somewhere other than a dedicated build node, or reach into its node:
 * none for the builder DaemonSet.
 */
function builderPlacementProblems(podSpec: unknown): string[] {
  const problems: string[] = [];
  if (get(podSpec, 'nodeSelector', BUILDER_LABEL) !== 'true') problems.push(`nodeSelector ${BUILDER_LABEL} must be "true"`);
  const tolerations = (get(podSpec, 'tolerations') ?? []) as Obj[];
  const ownTaint = (t: Obj) =>
    t['key'] === BUILDER_LABEL &&
    t['effect'] === 'NoSchedule' &&
    ((t['operator'] ?? 'Equal') === 'Equal' ? t['value'] === 'true' : t['operator'] === 'Exists');
  if (!tolerations.some(ownTaint)) problems.push(`no toleration for the ${BUILDER_LABEL}=true:NoSchedule taint`);
  for (const t of tolerations) if (!ownTaint(t)) problems.push(`tolerates more than the build nodes' taint: ${JSON.stringify(t)}`);
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) if (get(podSpec, k) === true) problems.push(`${k} is set`);
  for (const v of (get(podSpec, 'volumes') ?? []) as Obj[]) {
    if (v['hostPath'] !== undefined) problems.push(`volume ${String(v['name'])} is a hostPath`);
  }
  return problems;
}

describe('deploy/ manifests', () => {
  it('finds the manifests', () => {
    assert.ok(yamlFiles.length >= 5, `only ${yamlFiles.join(', ')} in ${deployDir}`);
    assert.ok(manifests.length > 0);
  });

  it('every document validates against the Kubernetes schema', () => {
    for (const { file, obj } of manifests) {
      const id = `${file}: ${String(obj['kind'])}/${String(get(obj, 'metadata', 'name'))}`;
      assert.doesNotThrow(() => validate(obj), id);
    }
  });

  it('rejects an unknown apiVersion/kind', () => {
    assert.throws(() => validate({ apiVersion: 'v1', kind: 'NoSuchKind', metadata: { name: 'x' } }), /no schema model/);
  });

  it('reads the same under YAML 1.1 (kubectl) and YAML 1.2', () => {
    // kubectl parses YAML 1.1, where e.g. `yes`, `on` or `0440` mean something else.
    for (const file of yamlFiles) {
      assert.deepEqual(parseFile(file, '1.1'), parseFile(file, '1.2'), file);
    }
  });

  it('labels everything and keeps namespaced objects in the shadowlayer namespace', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
    for (const { file, obj } of manifests) {
      const id = `${file}: ${String(obj['kind'])}/${String(get(obj, 'metadata', 'name'))}`;
      assert.equal(get(obj, 'metadata', 'labels', 'app.kubernetes.io/name'), 'shadowlayer', id);
      if (clusterScoped.has(String(obj['kind']))) continue;
      assert.equal(get(obj, 'metadata', 'namespace'), 'shadowlayer', id);
    }
  });

  it('agent DaemonSet: host PID, read-only host mounts, docker socket, node name', () => {
    const ds = find('DaemonSet', 'shadowlayer-agent');
    const pod = get(ds, 'spec', 'template', 'spec');
    assert.equal(get(pod, 'hostPID'), true);
    assert.equal(get(pod, 'serviceAccountName'), 'shadowlayer-agent');
    assert.ok(
      arr(pod, 'tolerations').some((t) => t['operator'] === 'Exists' && t['key'] === undefined && t['effect'] === undefined),
      'must tolerate every taint',
    );

    const hostMounts: [string, string][] = [
      ['/proc', '/host/proc'],
      ['/sys/fs/cgroup', '/sys/fs/cgroup'],
      ['/var/lib/docker', '/var/lib/docker'],
    ];
    for (const [hostPath, mountPath] of hostMounts) {
      const { mount, volume } = mountAt(pod, mountPath);
      assert.equal(get(volume, 'hostPath', 'path'), hostPath, mountPath);
      assert.equal(mount['readOnly'], true, `${mountPath} must be readOnly`);
    }
    const sock = mountAt(pod, '/var/run/docker.sock');
    assert.equal(get(sock.volume, 'hostPath', 'path'), '/var/run/docker.sock');
    assert.equal(get(sock.volume, 'hostPath', 'type'), 'Socket');

    const tls = mountAt(pod, '/etc/shadowlayer/tls');
    assert.equal(get(tls.volume, 'secret', 'secretName'), 'shadowlayer-agent-tls');
    assert.equal(tls.mount['readOnly'], true);

    const container = arr(pod, 'containers')[0];
    const env = arr(container, 'env');
    assert.equal(get(byName(env, 'NODE_NAME'), 'valueFrom', 'fieldRef', 'fieldPath'), 'spec.nodeName');
    const nodeIdx = env.findIndex((e) => e['name'] === 'NODE_NAME');
    const slIdx = env.findIndex((e) => e['name'] === 'SHADOWLAYER_NODE');
    assert.equal(env[slIdx]?.['value'], '$(NODE_NAME)');
    assert.ok(nodeIdx < slIdx, 'NODE_NAME must be defined before SHADOWLAYER_NODE refers to it');

    const command = get(container, 'command');
    assert.ok(Array.isArray(command));
    assert.deepEqual(command.slice(0, 2), ['shadowlayer', 'agent']);
    assert.equal(command[command.indexOf('--proc-root') + 1], '/host/proc');
    // The telemetry spool lives on the node, so it survives a restarted agent pod.
    const spoolDir = command[command.indexOf('--data-dir') + 1];
    assert.equal(get(mountAt(pod, String(spoolDir)).volume, 'hostPath', 'path'), '/var/lib/shadowlayer');
    assert.equal(get(mountAt(pod, '/sys/kernel/tracing').volume, 'hostPath', 'path'), '/sys/kernel/tracing');
    assert.equal(get(container, 'securityContext', 'privileged'), true);
    assert.deepEqual(byName(arr(container, 'ports'), 'metrics')['containerPort'], 9465);
  });

  it('aggregator: one replica, Recreate, PVC-backed data, Service on 7443', () => {
    const dep = find('Deployment', 'shadowlayer-aggregator');
    assert.equal(get(dep, 'spec', 'replicas'), 1);
    assert.equal(get(dep, 'spec', 'strategy', 'type'), 'Recreate');
    const pod = get(dep, 'spec', 'template', 'spec');
    const data = mountAt(pod, '/var/lib/shadowlayer');
    const claim = get(data.volume, 'persistentVolumeClaim', 'claimName');
    assert.equal(claim, 'shadowlayer-data');
    const pvc = find('PersistentVolumeClaim', String(claim));
    assert.deepEqual(get(pvc, 'spec', 'accessModes'), ['ReadWriteOnce']);

    const tls = mountAt(pod, '/etc/shadowlayer/tls');
    assert.equal(get(tls.volume, 'secret', 'secretName'), 'shadowlayer-aggregator-tls');
    assert.equal(tls.mount['readOnly'], true);

    const container = arr(pod, 'containers')[0];
    assert.equal(get(pod, 'securityContext', 'runAsNonRoot'), true);
    assert.equal(get(container, 'securityContext', 'readOnlyRootFilesystem'), true);

    const svc = find('Service', 'shadowlayer-aggregator');
    const grpc = arr(svc, 'spec', 'ports').find((p) => p['port'] === 7443);
    assert.ok(grpc, 'Service must expose 7443');
    assert.equal(grpc['name'], 'grpc');
    // The Service must select the aggregator's pods.
    const podLabels = get(dep, 'spec', 'template', 'metadata', 'labels') as Obj;
    for (const [k, v] of Object.entries(get(svc, 'spec', 'selector') as Obj)) {
      assert.equal(podLabels[k], v, `selector ${k}`);
    }
  });

  it('builders: a TLS-verified engine on dedicated build nodes only, its data on the node, bounded', () => {
    const ds = find('DaemonSet', 'shadowlayer-builder');
    const pod = get(ds, 'spec', 'template', 'spec');
    assert.deepEqual(builderPlacementProblems(pod), []);
    assert.equal(get(pod, 'automountServiceAccountToken'), false, 'the engine needs no API token');

    const engine = containerNamed(pod, 'engine');
    assert.match(String(engine['image']), /^docker:\d+-dind$/);
    assert.equal(get(engine, 'securityContext', 'privileged'), true);
    const args = argv(engine);
    assert.equal(args[0], 'dockerd', 'starting with dockerd skips the image\'s self-made certificates');
    assert.ok(args.includes('--tlsverify'), 'client certificates must be verified');
    const hosts = flagValues(args, '--host');
    assert.ok(hosts.includes('tcp://0.0.0.0:2376'), hosts.join(' '));
    assert.ok(!hosts.some((h) => h.endsWith(':2375')), 'never the unauthenticated port');
    for (const [flag, file] of [['--tlscacert', 'ca.pem'], ['--tlscert', 'cert.pem'], ['--tlskey', 'key.pem']] as const) {
      assertSecretFile(pod, engine, oneFlag(args, flag), 'shadowlayer-builder-tls', file);
    }
    const port = byName(arr(engine, 'ports'), 'docker-tls');
    assert.equal(port['containerPort'], 2376);
    assert.equal(port['hostPort'], 2376, 'builders are named by their node\'s address');

    // The image store is on the node's disk (an emptyDir), bounded, never the node's own engine's.
    const data = mountAt(pod, '/var/lib/docker');
    assert.ok(get(data.volume, 'emptyDir') !== undefined, 'the engine data is an emptyDir');
    assert.ok(get(data.volume, 'emptyDir', 'sizeLimit') !== undefined, 'the emptyDir has a sizeLimit');

    for (const kind of ['requests', 'limits']) {
      for (const r of ['cpu', 'memory', 'ephemeral-storage']) {
        assert.ok(get(engine, 'resources', kind, r) !== undefined, `resources.${kind}.${r}`);
      }
    }
    assert.equal(get(engine, 'resources', 'requests', 'memory'), get(engine, 'resources', 'limits', 'memory'), 'memory request = limit');

    // The registry's CA reaches the engine's certs.d.
    const init = containerNamed(pod, 'registry-ca', 'initContainers');
    assertSecretFile(pod, init, '/registry/ca.crt', 'shadowlayer-registry', 'ca.crt');
    const written = ((get(init, 'volumeMounts') ?? []) as Obj[]).find((m) => m['mountPath'] === '/certs.d');
    assert.ok(written, 'the init container writes certs.d');
    const read = mountAt(pod, '/etc/docker/certs.d');
    assert.equal(read.mount['name'], written['name'], 'the engine reads the certs.d the init container wrote');
    assert.ok(get(read.volume, 'emptyDir') !== undefined, 'the builder\'s certs.d is its own, not the node\'s');
  });

  it('the builders\' placement check bites', () => {
    const pod = get(find('DaemonSet', 'shadowlayer-builder'), 'spec', 'template', 'spec') as Obj;
    const everywhere = structuredClone(pod);
    everywhere['tolerations'] = [...arr(everywhere, 'tolerations'), { operator: 'Exists' }];
    assert.match(builderPlacementProblems(everywhere).join('\n'), /tolerates more/);
    const untolerated = structuredClone(pod);
    untolerated['tolerations'] = [];
    assert.match(builderPlacementProblems(untolerated).join('\n'), /no toleration/);
    const unselected = structuredClone(pod);
    delete unselected['nodeSelector'];
    assert.match(builderPlacementProblems(unselected).join('\n'), /nodeSelector/);
    const onHost = structuredClone(pod);
    onHost['volumes'] = [...arr(onHost, 'volumes'), { name: 'sock', hostPath: { path: '/var/run/docker.sock' } }];
    assert.match(builderPlacementProblems(onHost).join('\n'), /hostPath/);
  });

  it('aggregator: builders over TLS, signing key, registry flags, each file mounted', () => {
    const dep = find('Deployment', 'shadowlayer-aggregator');
    const pod = get(dep, 'spec', 'template', 'spec');
    const container = containerNamed(pod, 'aggregator');
    const args = argv(container);

    const builderPort = byName(arr(find('DaemonSet', 'shadowlayer-builder'), 'spec', 'template', 'spec', 'containers', 0, 'ports'), 'docker-tls')['hostPort'];
    const specs = flagValues(args, '--builder');
    assert.ok(specs.length >= 1, 'at least one --builder');
    for (const spec of specs) {
      const [endpoint = '', ...options] = spec.split(',');
      assert.match(endpoint, new RegExp(`^tcp://[^/:]+:${String(builderPort)}$`), spec);
      const opts = new Map(options.map((o) => [o.slice(0, o.indexOf('=')), o.slice(o.indexOf('=') + 1)]));
      const tls = opts.get('tls');
      assert.ok(tls !== undefined, `${spec}: tls=DIR`);
      for (const f of ['ca.pem', 'cert.pem', 'key.pem']) {
        assertSecretFile(pod, container, path.posix.join(tls, f), 'shadowlayer-builder-client-tls', f);
      }
      assert.match(opts.get('concurrency') ?? '', /^[1-9]\d*$/, `${spec}: concurrency=N`);
    }

    assertSecretFile(pod, container, oneFlag(args, '--signing-key'), 'shadowlayer-aggregator-tls', 'cosign.key');
    assertSecretFile(pod, container, oneFlag(args, '--registry-ca'), 'shadowlayer-registry', 'ca.crt');
    assertSecretFile(pod, container, oneFlag(args, '--registry-auth'), 'shadowlayer-registry', 'auth');
    // The CA key makes certificates; nothing in the cluster may hold it.
    const tlsItems = arr(mountAt(pod, '/etc/shadowlayer/tls').volume, 'secret', 'items').map((i) => i['key']);
    assert.ok(tlsItems.includes('cosign.key'));
    assert.ok(!tlsItems.includes('ca.key'));

    // --registry comes from the ConfigMap the container takes its environment from.
    const ref = /^\$\(([A-Z_]+)\)$/.exec(oneFlag(args, '--registry'));
    assert.ok(ref, '--registry refers to a variable');
    const cmName = get(arr(container, 'envFrom')[0], 'configMapRef', 'name');
    const registry = get(find('ConfigMap', String(cmName)), 'data', String(ref[1]));
    assert.match(String(registry), /^[A-Za-z0-9.-]+:\d+\/[a-z0-9]+(?:[._/-][a-z0-9]+)*$/, 'HOST:PORT/REPO');
  });

  it('the file wiring check bites: a path outside every mount, or a key a Secret does not project', () => {
    const dep = find('Deployment', 'shadowlayer-aggregator');
    const pod = get(dep, 'spec', 'template', 'spec');
    const container = containerNamed(pod, 'aggregator');
    assert.match(String(secretFileSource(pod, container, '/etc/shadowlayer/elsewhere/cosign.key')), /nothing is mounted/);
    assert.match(String(secretFileSource(pod, container, '/etc/shadowlayer/tls/ca.key')), /without ca\.key/);
    assert.match(String(secretFileSource(pod, container, '/tmp/x')), /not a Secret/);
  });

  it('agent: cosign.pub and the registry auth and CA, the CA installed for the node\'s engine', () => {
    const ds = find('DaemonSet', 'shadowlayer-agent');
    const pod = get(ds, 'spec', 'template', 'spec');
    const container = containerNamed(pod, 'agent');
    const args = argv(container);
    assertSecretFile(pod, container, oneFlag(args, '--signing-key-pub'), 'shadowlayer-agent-tls', 'cosign.pub');
    assertSecretFile(pod, container, oneFlag(args, '--registry-auth'), 'shadowlayer-registry', 'auth');
    assertSecretFile(pod, container, oneFlag(args, '--registry-ca'), 'shadowlayer-registry', 'ca.crt');

    const init = containerNamed(pod, 'registry-ca', 'initContainers');
    assertSecretFile(pod, init, '/registry/ca.crt', 'shadowlayer-registry', 'ca.crt');
    const certsD = ((get(init, 'volumeMounts') ?? []) as Obj[]).find((m) => m['mountPath'] === '/host/etc/docker/certs.d');
    assert.ok(certsD, 'the init container mounts the node\'s certs.d');
    assert.equal(get(byName(arr(pod, 'volumes'), String(certsD['name'])), 'hostPath', 'path'), '/etc/docker/certs.d');
    assert.notEqual(get(init, 'securityContext', 'privileged'), true, 'writing one file needs no privilege');
  });

  it('every Secret a manifest mounts is one the README says how to create', () => {
    const readme = readFileSync(path.join(deployDir, 'README.md'), 'utf8');
    const created = new Set([...readme.matchAll(/create secret generic (\S+)/g)].map((m) => String(m[1])));
    const mounted = new Set<string>();
    for (const { obj } of manifests) {
      for (const v of (get(obj, 'spec', 'template', 'spec', 'volumes') ?? []) as Obj[]) {
        const name = get(v, 'secret', 'secretName');
        if (typeof name === 'string') mounted.add(name);
      }
    }
    assert.ok(mounted.size >= 5, [...mounted].join(', '));
    for (const name of mounted) assert.ok(created.has(name), `the README never creates Secret ${name}`);
  });

  it('kustomization.yaml lists exactly the manifests present', () => {
    const [kust, ...rest] = parseFile('kustomization.yaml', '1.2');
    assert.equal(rest.length, 0);
    const resources = get(kust, 'resources');
    assert.ok(Array.isArray(resources));
    assert.deepEqual([...(resources as string[])].sort(), yamlFiles);
  });

  it('agent DaemonSet: reads containerd (socket and overlayfs snapshots, read-only) with --runtime auto', () => {
    const pod = get(find('DaemonSet', 'shadowlayer-agent'), 'spec', 'template', 'spec');
    const args = argv(arr(pod, 'containers')[0]);
    assert.deepEqual(flagValues(args, '--runtime'), ['auto']);
    const socket = flagValues(args, '--containerd-socket')[0] ?? '';
    const run = mountAt(pod, '/run/containerd');
    assert.ok(socket.startsWith('/run/containerd/'), socket);
    assert.equal(run.mount['readOnly'], true);
    assert.equal(get(run.volume, 'hostPath', 'path'), '/run/containerd');
    const snapshots = flagValues(args, '--containerd-snapshots')[0] ?? '';
    const snap = mountAt(pod, snapshots);
    assert.equal(snap.mount['readOnly'], true);
    assert.equal(get(snap.volume, 'hostPath', 'path'), '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs');
  });

  // The components are applied here as kustomize would (JSON 6902 operations with their `test`
  // guards; a strategic merge of volumes by name), then validated against the schema.
  const component = (dir: string): { patch: unknown; kind: 'json6902' | 'merge' } => {
    const [kust] = parseFile(`${dir}/kustomization.yaml`, '1.2');
    assert.equal(get(kust, 'kind'), 'Component');
    const entry = arr(kust, 'patches')[0];
    assert.equal(get(entry, 'target', 'name'), 'shadowlayer-agent');
    const text = readFileSync(path.join(deployDir, dir, String(entry?.['path'])), 'utf8');
    const patch: unknown = parseAllDocuments(text)[0]?.toJS();
    return { patch, kind: Array.isArray(patch) ? 'json6902' : 'merge' };
  };
  const applyJson6902 = (doc: Obj, ops: Obj[]): Obj => {
    const out = structuredClone(doc);
    for (const op of ops) {
      const parts = String(op['path']).split('/').slice(1);
      const last = parts.pop() ?? '';
      const parent = get(out, ...parts.map((k) => (/^\d+$/.test(k) ? Number(k) : k))) as Record<string, unknown> | unknown[];
      assert.ok(parent !== undefined && parent !== null, `no parent for ${String(op['path'])}`);
      const key = Array.isArray(parent) ? Number(last) : last;
      const cur = (parent as Record<string | number, unknown>)[key];
      if (op['op'] === 'test') assert.deepEqual(cur, op['value'], `test failed at ${String(op['path'])}`);
      else if (op['op'] === 'replace') {
        assert.notEqual(cur, undefined, `nothing to replace at ${String(op['path'])}`);
        (parent as Record<string | number, unknown>)[key] = op['value'];
      } else if (op['op'] === 'remove') {
        assert.notEqual(cur, undefined, `nothing to remove at ${String(op['path'])}`);
        if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete (parent as Record<string, unknown>)[last];
      } else assert.fail(`unexpected op ${String(op['op'])}`);
    }
    return out;
  };
  const mergeVolumes = (doc: Obj, patch: unknown): Obj => {
    const out = structuredClone(doc);
    const vols = arr(out, 'spec', 'template', 'spec', 'volumes');
    for (const v of arr(patch, 'spec', 'template', 'spec', 'volumes')) {
      const target = byName(vols, String(v['name']));
      Object.assign(target, structuredClone(v));
    }
    return out;
  };
  const applyComponent = (doc: Obj, dir: string): Obj => {
    const c = component(dir);
    return c.kind === 'json6902' ? applyJson6902(doc, c.patch as Obj[]) : mergeVolumes(doc, c.patch);
  };

  it('containerd-node component: no Docker socket, store or certs.d; --runtime containerd; still valid', () => {
    const ds = applyComponent(find('DaemonSet', 'shadowlayer-agent'), 'containerd-node');
    validate(ds);
    const pod = get(ds, 'spec', 'template', 'spec');
    const args = argv(arr(pod, 'containers')[0]);
    assert.deepEqual(flagValues(args, '--runtime'), ['containerd']);
    assert.deepEqual(flagValues(args, '--docker-socket'), []);
    assert.deepEqual(flagValues(args, '--docker-root'), []);
    assert.equal(get(pod, 'initContainers'), undefined);
    const hostPaths = arr(pod, 'volumes').map((v) => String(get(v, 'hostPath', 'path') ?? ''));
    assert.ok(!hostPaths.some((p) => p.includes('docker')), hostPaths.join(', '));
    const names = new Set(arr(pod, 'volumes').map((v) => v['name']));
    for (const m of arr(pod, 'containers', 0, 'volumeMounts')) assert.ok(names.has(m['name']), `mount ${String(m['name'])} has its volume`);
    assert.equal(mountAt(pod, '/run/containerd').mount['readOnly'], true);
  });

  for (const [dir, root] of [
    ['k3s', '/var/lib/rancher/k3s/agent/containerd'],
    ['rke2', '/var/lib/rancher/rke2/agent/containerd'],
  ] as const) {
    it(`${dir} component: containerd's socket and snapshots from their ${dir} paths, in either order with containerd-node`, () => {
      const base = find('DaemonSet', 'shadowlayer-agent');
      for (const ds of [applyComponent(applyComponent(base, 'containerd-node'), dir), applyComponent(applyComponent(base, dir), 'containerd-node')]) {
        validate(ds);
        const pod = get(ds, 'spec', 'template', 'spec');
        const args = argv(arr(pod, 'containers')[0]);
        assert.equal(get(mountAt(pod, '/run/containerd').volume, 'hostPath', 'path'), '/run/k3s/containerd');
        const snap = mountAt(pod, flagValues(args, '--containerd-snapshots')[0] ?? '');
        assert.equal(get(snap.volume, 'hostPath', 'path'), `${root}/io.containerd.snapshotter.v1.overlayfs`);
        assert.equal(snap.mount['readOnly'], true);
      }
    });
  }

  it('the schema check bites: a string containerPort is rejected', () => {
    const ds = find('DaemonSet', 'shadowlayer-agent');
    const broken = structuredClone(ds);
    const port = arr(broken, 'spec', 'template', 'spec', 'containers', 0, 'ports')[0];
    assert.ok(port);
    port['containerPort'] = 'not-a-port';
    assert.doesNotThrow(() => validate(ds), 'the original must still be valid');
    assert.throws(() => validate(broken));
  });
});
