"""The quickstart search from Python: ``NasExperiment`` + nni-xfer's strategy adapter.

    python examples/quickstart/nas_experiment.py --trials 3 --epochs 3

Runs in this process (NNI's sequential execution engine); every evaluation lands in the
knowledge store (``$NNI_XFER_HOME/store.db``) under NNI's experiment id, like a ``nnictl`` run
(``nni-xfer report <id>`` afterwards).
"""
import argparse

from nni_xfer.runtime.known_warnings import filter_known_warnings

filter_known_warnings()  # NNI's known harmless warnings only (nni_xfer/runtime/known_warnings.py)

from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402

from nni_xfer.adapters.nas import XferEvaluator, XferStrategy, make_space  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--strategy', default='random')
    p.add_argument('--dataset', default='digits')
    p.add_argument('--evaluator', default='train', help='train | mock')
    p.add_argument('--trials', type=int, default=3)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--store', default=None)
    p.add_argument('--port', type=int, default=8081)
    args = p.parse_args(argv)

    space = make_space('simple_cnn', dataset=args.dataset)
    evaluator_args = {'epochs': args.epochs} if args.evaluator == 'train' else {}
    evaluator = XferEvaluator(dataset=args.dataset, evaluator=args.evaluator, evaluator_args=evaluator_args)
    strategy = XferStrategy(args.strategy, seed=args.seed, store=args.store)
    # The sequential engine evaluates in this process ('raw' keeps the model objects as built); it has
    # no training service, so none is given.
    config = NasExperimentConfig('sequential', 'raw', max_trial_number=args.trials)
    exp = NasExperiment(space, evaluator, strategy, config=config)
    strategy.experiment_id = exp.id  # the knowledge store uses NNI's experiment id
    try:
        exp.run(port=args.port)
    finally:
        exp.stop()  # NNI leaves a finished experiment to atexit otherwise (it then logs to closed streams)
    print(f'experiment {strategy.experiment_id}: best', strategy.core.best())
    return strategy


if __name__ == '__main__':
    main()
