package k8stest

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The node's cluster DNS, as kubeadm sets it up: the kubelet points pods at
// ClusterDNS (the kube-dns Service's ClusterIP) for ClusterDomain; RunCoreDNS
// puts CoreDNS behind it.
const (
	ClusterDNS    = "10.96.0.10"
	ClusterDomain = "cluster.local"
	CoreDNSImage  = "docker.io/ebpfnet/coredns:test"
)

// CoreDNSArchive builds CoreDNS if needed (scripts/build-coredns.sh, cached
// in ~/.cache/ebpfnet) and returns the archive of its image, CoreDNSImage.
func CoreDNSArchive(t testing.TB) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	out, err := exec.Command(filepath.Join(root, "scripts", "build-coredns.sh")).Output()
	require.NoError(t, err, "scripts/build-coredns.sh")
	return BinaryImage(t, strings.TrimSpace(string(out)), CoreDNSImage)
}

// corefile serves the cluster's zone from the API server (the kubernetes
// plugin) and logs every query (the log plugin: client address and port,
// ID, type, name, rcode), which tests compare with what they observed.
// Names outside the zone have no upstream here: SERVFAIL.
const corefile = `.:53 {
    errors
    log
    health :8080
    ready :8181
    kubernetes ` + ClusterDomain + ` in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
}
`

// RunCoreDNS runs replicas of CoreDNS (image CoreDNSImage, imported) as
// Deployment kube-system/coredns behind Service kube-dns at ClusterDNS, with
// the RBAC upstream's manifest gives it, and waits until they are Ready.
func (n *Node) RunCoreDNS(ctx context.Context, t testing.TB, replicas int32) []corev1.Pod {
	t.Helper()
	const ns = "kube-system"
	_, err := n.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns"}},
		metav1.CreateOptions{})
	require.NoError(t, err)
	list := []string{"list", "watch"}
	_, err = n.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: list},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: list},
		}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = n.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = n.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"k8s-app": "kube-dns"}
	_, err = n.Client.AppsV1().Deployments(ns).Create(ctx, coreDNSDeployment(replicas, labels), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = n.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: labels},
		Spec: corev1.ServiceSpec{Selector: labels, ClusterIP: ClusterDNS, Ports: []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return n.WaitReady(ctx, t, ns, "k8s-app=kube-dns", int(replicas))
}

func coreDNSDeployment(replicas int32, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "coredns",
					DNSPolicy:          corev1.DNSDefault,
					Containers: []corev1.Container{{
						Name: "coredns", Image: CoreDNSImage, ImagePullPolicy: corev1.PullNever,
						Args:         []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}}, PeriodSeconds: 1},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}}}}},
					TerminationGracePeriodSeconds: new(int64),
				},
			},
		},
	}
}

// RunResolver runs one pod (Deployment name in ns) of the test app that,
// after a 5 s pause, looks up each of names rounds times, every 200 ms,
// through the Go resolver and the pod's cluster DNS, logging each lookup
// and "done" at the end; it returns the pod.
func (n *Node) RunResolver(ctx context.Context, t testing.TB, ns, name string, rounds int, names ...string) corev1.Pod {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": name}
	n.deploy(ctx, t, ns, name, 1, labels, append([]string{"resolve", "5s", strconv.Itoa(rounds)}, names...), nil)
	return n.WaitReady(ctx, t, ns, "app.kubernetes.io/name="+name, 1)[0]
}
