"""Auto Scaling API calls moto lacks but amazon.aws.autoscaling_group makes on every update."""

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult


def install():
    if hasattr(AutoScalingResponse, "disable_metrics_collection"):
        return  # a moto that has it

    def disable_metrics_collection(self):
        """DisableMetricsCollection: no Metrics means all of them (as AWS does)."""
        group_name = self._get_param("AutoScalingGroupName")
        metrics = self._get_param("Metrics") or []
        group = self.autoscaling_backend.describe_auto_scaling_groups([group_name])[0]
        group.metrics = [m for m in group.metrics if metrics and m not in metrics]
        return EmptyResult()

    AutoScalingResponse.disable_metrics_collection = disable_metrics_collection
