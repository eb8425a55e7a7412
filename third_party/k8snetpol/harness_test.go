package netpol

// The "cluster" of the copied suite (ours, not Kubernetes'): what the
// suite's kubemanager.go does against a real API server, done against
// client-go's fake clientset, and a prober that, instead of running agnhost
// in a pod, answers with internal/netpol's verdicts for the policies and
// labels the suite created. The suite's cases and truth tables decide
// whether those verdicts are right.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	evaluator "github.com/ebpfnet/ebpfnet/internal/netpol"
	"github.com/ebpfnet/ebpfnet/third_party/k8snetpol/shim/framework"
)

// TestPod is a pod of the model with its Service address.
type TestPod struct {
	Namespace string
	Name      string
	ServiceIP string
}

func (pod TestPod) PodString() PodString { return NewPodString(pod.Namespace, pod.Name) }

type kubeManager struct {
	clientSet      clientset.Interface
	namespaceNames []string
	allPods        []TestPod
	allPodStrings  []PodString
	dnsDomain      string
	byService      map[string]*v1.Pod // Service IP -> its pod
	probes         int
}

// newKubeManager starts an empty fake cluster for one case.
func newKubeManager(f *framework.Framework, dnsDomain string) *kubeManager {
	f.ClientSet = fake.NewSimpleClientset()
	return &kubeManager{clientSet: f.ClientSet, dnsDomain: dnsDomain, byService: map[string]*v1.Pod{}}
}

// initializeClusterFromModel creates the model's namespaces (with the
// label the API server adds), pods (with an address each) and Services.
func (k *kubeManager) initializeClusterFromModel(ctx context.Context, model *Model) error {
	for i, ns := range model.Namespaces {
		_, err := k.clientSet.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns.Name, Labels: map[string]string{namespaceLabelKey: ns.Name}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		k.namespaceNames = append(k.namespaceNames, ns.Name)
		for j, pod := range ns.Pods {
			kp := pod.KubePod(ns.Name)
			kp.Status = v1.PodStatus{Phase: v1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", 100+i, j/250, 2+j%250)}
			kp.Status.PodIPs = []v1.PodIP{{IP: kp.Status.PodIP}}
			if _, err := k.clientSet.CoreV1().Pods(ns.Name).Create(ctx, kp, metav1.CreateOptions{}); err != nil {
				return err
			}
			svc := pod.Service(ns.Name)
			svc.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", i, 2+j)
			if _, err := k.clientSet.CoreV1().Services(ns.Name).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return err
			}
			k.byService[svc.Spec.ClusterIP] = kp
			k.allPods = append(k.allPods, TestPod{Namespace: ns.Name, Name: kp.Name, ServiceIP: svc.Spec.ClusterIP})
			k.allPodStrings = append(k.allPodStrings, NewPodString(ns.Name, kp.Name))
		}
	}
	return nil
}

func (k *kubeManager) AllPods() []TestPod         { return k.allPods }
func (k *kubeManager) AllPodStrings() []PodString { return k.allPodStrings }
func (k *kubeManager) DNSDomain() string          { return k.dnsDomain }
func (k *kubeManager) NamespaceNames() []string   { return k.namespaceNames }
func (k *kubeManager) getPod(ctx context.Context, ns, name string) (*v1.Pod, error) {
	return k.clientSet.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

func (k *kubeManager) getNamespace(ctx context.Context, ns string) (*v1.Namespace, error) {
	return k.clientSet.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
}

func (k *kubeManager) createNetworkPolicy(ctx context.Context, ns string, np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	np.Namespace = ns
	return k.clientSet.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
}

func (k *kubeManager) updateNetworkPolicy(ctx context.Context, ns string, np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	np.Namespace = ns
	return k.clientSet.NetworkingV1().NetworkPolicies(ns).Update(ctx, np, metav1.UpdateOptions{})
}

func (k *kubeManager) cleanNetworkPolicies(ctx context.Context) error {
	for _, ns := range k.namespaceNames {
		l, err := k.clientSet.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, np := range l.Items {
			if err := k.clientSet.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// probeConnectivity: connected when the source's egress and the
// destination pod's ingress both allow the connection (no policy isolating
// either side in that direction, or a rule allowing it), as the evaluator
// says for the cluster's current policies and labels.
func (k *kubeManager) probeConnectivity(args *probeConnectivityArgs) (bool, string, error) {
	ctx := context.Background()
	k.probes++
	cmd := fmt.Sprintf("evaluate %s/%s -> %s:%d/%s", args.nsFrom, args.podFrom, args.addrTo, args.toPort, args.protocol)
	dst := k.byService[args.addrTo]
	if dst == nil {
		return false, cmd, fmt.Errorf("no pod behind Service IP %s", args.addrTo)
	}
	src, err := k.getPod(ctx, args.nsFrom, args.podFrom)
	if err != nil {
		return false, cmd, err
	}
	if dst, err = k.getPod(ctx, dst.Namespace, dst.Name); err != nil { // its current labels
		return false, cmd, err
	}
	pols, err := k.policies(ctx)
	if err != nil {
		return false, cmd, err
	}
	from, to := evalPod(src), evalPod(dst)
	port := uint16(args.toPort)
	egress := pols.Egress(from, evaluator.Endpoint{Pod: to, IP: podIP(dst)}, port, args.protocol)
	ingress := pols.Ingress(to, evaluator.Endpoint{Pod: from, IP: podIP(src)}, port, args.protocol)
	if egress.Result == evaluator.Denied || ingress.Result == evaluator.Denied {
		return false, cmd, fmt.Errorf("egress %s %v, ingress %s %v", egress.Result, egress.Policies, ingress.Result, ingress.Policies)
	}
	return true, cmd, nil
}

// policies compiles the cluster's policies with its namespaces' labels.
func (k *kubeManager) policies(ctx context.Context) (*evaluator.Policies, error) {
	var nps []*networkingv1.NetworkPolicy
	labels := map[string]map[string]string{}
	for _, ns := range k.namespaceNames {
		n, err := k.getNamespace(ctx, ns)
		if err != nil {
			return nil, err
		}
		labels[ns] = n.Labels
		l, err := k.clientSet.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range l.Items {
			nps = append(nps, &l.Items[i])
		}
	}
	return evaluator.New(nps, labels)
}

func evalPod(p *v1.Pod) *evaluator.Pod {
	out := &evaluator.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}
	for _, c := range p.Spec.Containers {
		out.Ports = append(out.Ports, c.Ports...)
	}
	return out
}

func podIP(p *v1.Pod) netip.Addr {
	a, _ := netip.ParseAddr(p.Status.PodIP)
	return a
}

func getProbeTimeoutSeconds() int { return 3 }
func getWorkers() int             { return 3 }
func getPollIntervalSeconds() int { return 1 }
func getPollTimeoutSeconds() int  { return 10 }

// TestKubernetesNetworkPolicyE2E runs every case of Kubernetes' own
// NetworkPolicy e2e suite with the evaluator as the network plugin: each
// case's reachability matrix (its truth table) must be what the evaluator
// allows and denies.
func TestKubernetesNetworkPolicyE2E(t *testing.T) {
	if len(framework.Cases) < 40 {
		t.Fatalf("the copied suite registered %d cases; it has 48", len(framework.Cases))
	}
	for _, c := range framework.Cases {
		t.Run(strings.TrimPrefix(c.Name, "[sig-network] "), func(t *testing.T) {
			framework.Log = t.Logf
			defer func() {
				for i := len(framework.Cleanups) - 1; i >= 0; i-- {
					framework.Cleanups[i]()
				}
				framework.Cleanups = nil
				if r := recover(); r != nil {
					if f, ok := r.(framework.Failure); ok {
						t.Fatal(string(f))
					}
					panic(r)
				}
			}()
			c.Run(context.Background())
		})
	}
}
