package k8stest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestAppImage is the image of ./testapp.
const TestAppImage = "docker.io/ebpfnet/testapp:test"

// RunTestApp runs replicas of the test server as Deployment "web" behind
// Service "web" (TCP 80 -> 8080, UDP 53 -> 5353) in namespace ns, and waits
// until they are Ready.
func (n *Node) RunTestApp(ctx context.Context, t testing.TB, ns string, replicas int32) *corev1.Service {
	t.Helper()
	_, err := n.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"app.kubernetes.io/name": "web"}
	n.deploy(ctx, t, ns, "web", replicas, labels, []string{"server"}, map[string]string{WebServiceAnnotation: WebServiceName})
	svc, err := n.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	n.WaitReady(ctx, t, ns, "app.kubernetes.io/name=web", int(replicas))
	return svc
}

// RunTestClient runs one client pod (Deployment name) of the Service at
// clusterIP (TCP 80, UDP 53), asking for size bytes every 200 ms; it
// returns the pod's name.
func (n *Node) RunTestClient(ctx context.Context, t testing.TB, ns, name, clusterIP string, size int) string {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": name}
	n.deploy(ctx, t, ns, name, 1, labels, []string{"client", net.JoinHostPort(clusterIP, "80"), net.JoinHostPort(clusterIP, "53"),
		strconv.Itoa(size)}, nil)
	return n.WaitReady(ctx, t, ns, "app.kubernetes.io/name="+name, 1)[0].Name
}

// The web pods' service.name, set by the annotation the OpenTelemetry
// Kubernetes conventions read first (before the app.kubernetes.io labels).
const (
	WebServiceAnnotation = "resource.opentelemetry.io/service.name"
	WebServiceName       = "web-api"
)

func (n *Node) deploy(ctx context.Context, t testing.TB, ns, name string, replicas int32, labels map[string]string, args []string,
	annotations map[string]string) {
	_, err := n.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: TestAppImage, Args: args, ImagePullPolicy: corev1.PullNever,
				}}, TerminationGracePeriodSeconds: new(int64)},
			},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// WaitReady waits until want pods of the selector are Running and Ready.
func (n *Node) WaitReady(ctx context.Context, t testing.TB, ns, selector string, want int) []corev1.Pod {
	t.Helper()
	for {
		pods, err := n.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		var ready []corev1.Pod
		if err == nil {
			for _, p := range pods.Items {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
						ready = append(ready, p)
					}
				}
			}
		}
		if len(ready) >= want {
			return ready
		}
		n.Alive(t)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d pods %s/%s Ready (%v); kubelet: %s", len(ready), want, ns, selector, err, n.Log("kubelet"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// PodLog is a pod's log, through the API server (and the kubelet).
func (n *Node) PodLog(ctx context.Context, t testing.TB, ns, pod string) string {
	b, err := n.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).Do(ctx).Raw()
	if err != nil {
		return "(log: " + err.Error() + ")"
	}
	return string(b)
}
