// Package k8s proves deploy/: the Helm chart (deploy/helm/shoal), rendered
// with helm as a library for every value combination docs/kubernetes.md
// shows, and the kustomize overlays (deploy/kustomize), built with
// kustomize's krusty, are applied with server-side apply to a real
// kube-apiserver on etcd, and every object must be accepted. The rendered
// origin, tracker and agent containers are then run as processes (their
// args, config files and mounts mapped to temporary directories), and the
// agent's DaemonSet container once more for real, with `docker run` of its
// image (built by hack/images) in a dockerd of the test's own, host
// network, same args, env, mounts and securityContext; an image is pulled
// through each agent. The Grafana dashboard may reference only metric
// names Shoal's code registers.
//
// kube-apiserver is built from the Kubernetes release module in a module of
// its own (tools/kube-apiserver), so that Shoal's go.mod does not carry the
// Kubernetes tree; etcd is Debian's etcd-server.
package k8s
